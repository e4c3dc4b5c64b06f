"""The overlay (pixels where it must be), the annotated video (resolution, rate, audio) and the plot."""

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from mfsa_pipe.analysis.render import Annotator, OverlayData, render_timeline_png, render_video, sentiment_colour
from mfsa_pipe.analysis.report import Prediction
from mfsa_pipe.datasets.base import LabelSpec

from helpers import MEDIA_DIR as DATA

W, H = 640, 360
CLASSES = ["angry", "happy", "sad"]
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
BOX = (300.0, 80.0, 420.0, 230.0)


def _data(*, model: bool, duration: float = 4.0) -> OverlayData:
    vt = np.arange(0, duration, 1 / 15) + 1 / 30
    boxes = np.tile(BOX, (vt.size, 1))
    boxes[vt > 3.0] = np.nan  # the face leaves after 3 s
    at = np.arange(0, duration, 0.08) + 0.04
    rng = np.random.default_rng(0)
    return OverlayData(
        duration_s=duration,
        utterances=[(0.5, 1.8), (2.2, 3.8)],
        predictions=[Prediction(label="happy", probabilities={"angry": 0.1, "happy": 0.8, "sad": 0.1}),
                     Prediction(label="sad", probabilities={"angry": 0.2, "happy": 0.1, "sad": 0.7})] if model else [None, None],
        weights=[{"text": 0.2, "audio": 0.3, "vision": 0.5}] * 2 if model else [None, None],
        label_spec=LabelSpec(task="classification", classes=tuple(CLASSES)) if model else None,
        model_name="mfsa" if model else None,
        words=[(0.5, 0.9, "hello"), (1.0, 1.4, "there"), (2.3, 2.8, "good"), (2.9, 3.5, "morning")],
        vision_times=vt, boxes=boxes, emotions=rng.dirichlet(np.ones(7), vt.size).astype(np.float32),
        emotion_names=EMOTIONS, face_present=(vt <= 3.0).astype(np.float32),
        audio_times=at, loudness=rng.random(at.size).astype(np.float32), voicing=rng.random(at.size).astype(np.float32),
    )


def _background() -> np.ndarray:
    """A textured frame, so that 'unchanged' pixels are really the original ones."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(x * 255 // W), (y * 255 // H), np.full_like(x, 90)], axis=2).astype(np.uint8)


def _annotate(ann: Annotator, t: float, tmp_path: Path) -> np.ndarray:
    """Draw at t, write the frame as PNG and read it back: what a viewer of the frame sees."""
    frame = ann.draw(_background(), t)
    path = tmp_path / f"frame_{t:.2f}.png"
    assert cv2.imwrite(str(path), frame)
    return cv2.imread(str(path))


def _playhead_x(frame: np.ndarray, strip_y: int) -> int:
    """The playhead is drawn white over the strip: the column with the most white pixels."""
    strip = frame[strip_y:].astype(int)
    white = (strip.min(axis=2) > 235).sum(axis=0)
    return int(np.argmax(white))


@pytest.mark.parametrize("model", [True, False], ids=["model", "no-model"])
def test_overlay_pixels(tmp_path, model):
    ann = Annotator(_data(model=model), width=W, height=H)
    orig = _background()
    frames = {t: _annotate(ann, t, tmp_path) for t in (0.6, 2.0, 3.6)}
    assert len(list(tmp_path.glob("frame_*.png"))) == 3

    for frame in frames.values():
        # the timeline strip covers the bottom of the frame
        diff = np.abs(frame[ann.strip_y:].astype(int) - orig[ann.strip_y:].astype(int)).sum(axis=2)
        assert (diff > 30).mean() > 0.8
        # the middle of the picture is left alone (away from box, subtitles and panel)
        assert np.array_equal(frame[140:200, 480:620], orig[140:200, 480:620])

    # the playhead moves with t, at x = t / duration * width
    xs = {t: _playhead_x(f, ann.strip_y) for t, f in frames.items()}
    for t, x in xs.items():
        assert abs(x - t / 4.0 * (W - 1)) <= 3
    assert xs[0.6] < xs[2.0] < xs[3.6]

    # the face box is drawn (green) on its edges while there is a face, and not after it left
    x0, y0, x1, y1 = (int(v) for v in BOX)
    edge = frames[2.0][y0 - 1:y0 + 2, x0 + 10:x1 - 10].astype(int)
    assert ((edge[..., 1] > 180) & (edge[..., 2] < 120)).mean() > 0.8
    assert np.array_equal(frames[3.6][y0 - 1:y0 + 2, x0 + 10:x1 - 10], orig[y0 - 1:y0 + 2, x0 + 10:x1 - 10])

    # the top-left panel (prediction bars, or the signals under a "no model" label) is drawn
    panel = np.abs(frames[2.0][10:60, 10:200].astype(int) - orig[10:60, 10:200].astype(int)).sum(axis=2)
    assert (panel > 30).mean() > 0.3

    # subtitles: drawn above the strip while words are spoken, absent in silence long after
    sub = slice(ann.strip_y - 40, ann.strip_y - 2), slice(W // 2 - 60, W // 2 + 60)
    spoken = _annotate(ann, 1.2, tmp_path)
    assert not np.array_equal(spoken[sub], orig[sub])


def test_strip_shows_each_utterance_prediction_colour():
    ann = Annotator(_data(model=True), width=W, height=H)
    # stacked class probabilities, bottom-up in class order: utterance 1 is 80% 'happy' (yellow
    # in BGR: high G and R) in the middle, utterance 2 is 70% 'sad' (blue) at the top
    x_happy, x_sad = ann.x_of(1.2), ann.x_of(3.0)
    middle, top = ann.strip[ann.strip_h // 2], ann.strip[2]
    assert middle[x_happy][2] > 200 and middle[x_happy][1] > 150 and middle[x_happy][0] < 100
    assert top[x_sad][0] > 150 and top[x_sad][2] < 100
    assert ann.strip[:, ann.x_of(0.2)].max() < 60  # before any utterance: empty background


def test_frame_size_mismatch_is_refused():
    ann = Annotator(_data(model=True), width=W, height=H)
    with pytest.raises(ValueError, match="640x360"):
        ann.draw(np.zeros((100, 100, 3), np.uint8), 0.0)


@pytest.mark.integration
def test_render_video_keeps_resolution_rate_and_audio(tmp_path):
    src = DATA / "single_face.mp4"
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        w, h, rate, n_src = v.codec_context.width, v.codec_context.height, v.average_rate, v.frames
        first = next(c.decode(video=0)).to_ndarray(format="bgr24")
    data = _data(model=True, duration=2.4)
    stats = render_video(src=src, dst=tmp_path / "out.mp4", annotator=Annotator(data, width=w, height=h))
    assert stats.frames == n_src and stats.audio
    assert not list(tmp_path.glob(".*partial*"))
    with av.open(str(tmp_path / "out.mp4")) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (w, h)
        assert vs.average_rate == rate
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        out_first = next(c.decode(video=0)).to_ndarray(format="bgr24")
        frames = 1 + sum(1 for _ in c.decode(video=0))
    assert frames == n_src
    strip_y = Annotator(data, width=w, height=h).strip_y
    diff = np.abs(out_first[strip_y:].astype(int) - first[strip_y:].astype(int)).sum(axis=2)
    assert (diff > 30).mean() > 0.5  # the strip survived encoding


@pytest.mark.integration
def test_render_video_copies_aac_audio_and_keeps_its_start(tmp_path):
    """An AAC track is copied packet for packet (not re-encoded), on the same timeline: in
    face_noface.mov the audio starts 2.43 s after the picture; mp3 (single_face.mp4) is re-encoded."""
    src = DATA / "face_noface.mov"
    with av.open(str(src)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        w, h, start = v.codec_context.width, v.codec_context.height, float(a.start_time * a.time_base)
        payload = [bytes(p) for p in c.demux(audio=0) if p.size]
    data = _data(model=True, duration=6.4)
    stats = render_video(src=src, dst=tmp_path / "out.mp4", annotator=Annotator(data, width=w, height=h))
    assert stats.audio and stats.audio_copied
    with av.open(str(tmp_path / "out.mp4")) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        packets = [p for p in c.demux(audio=0) if p.size]
        assert [bytes(p) for p in packets] == payload
        assert abs(float(packets[0].pts * packets[0].time_base) - start) < 0.03
    with av.open(str(DATA / "single_face.mp4")) as c:
        v = c.streams.video[0]
        w, h = v.codec_context.width, v.codec_context.height
    stats = render_video(src=DATA / "single_face.mp4", dst=tmp_path / "mp3.mp4",
                         annotator=Annotator(_data(model=True, duration=2.4), width=w, height=h))
    assert stats.audio and not stats.audio_copied


def test_timeline_png(tmp_path):
    for model in (True, False):
        path = render_timeline_png(data=_data(model=model), path=tmp_path / f"t{model}.png", title="clip")
        img = cv2.imread(str(path))
        assert img is not None and img.shape[0] > 400 and img.shape[1] > 800
        assert img.std() > 10  # a plot, not a blank image


def test_regression_strip_and_gauge(tmp_path):
    data = _data(model=True)
    data.label_spec = LabelSpec(task="regression", range=(-3.0, 3.0))
    data.predictions = [Prediction(score=2.5), Prediction(score=-2.0)]
    ann = Annotator(data, width=W, height=H)
    mid = ann.strip_h // 2
    up, down = ann.strip[:, ann.x_of(1.2)], ann.strip[:, ann.x_of(3.0)]
    # a positive score is a green bar above the centre line, a negative one a red bar below it
    assert up[mid - 3][1] > 150 and up[mid + 3].max() < 100
    assert down[mid + 3][2] > 150 and down[mid - 3].max() < 100
    frame = _annotate(ann, 1.2, tmp_path)
    panel = np.abs(frame[10:70, 10:200].astype(int) - _background()[10:70, 10:200].astype(int)).sum(axis=2)
    assert (panel > 30).mean() > 0.2  # the gauge and its score label


def _two_heads(data: OverlayData) -> OverlayData:
    data.label_spec = LabelSpec.from_dict({"task": "multihead", "heads": [
        {"name": "emotion", "classes": CLASSES}, {"name": "sentiment", "classes": ["negative", "neutral", "positive"]}]})
    data.sentiments = [("positive", 0.8), ("negative", -0.6)]
    data.unused = [{}, {"audio": "silent"}]
    return data


def test_sentiment_band_panel_and_plot(tmp_path):
    single = Annotator(_data(model=True), width=W, height=H)
    ann = Annotator(_two_heads(_data(model=True)), width=W, height=H)
    assert ann.data.classes == CLASSES and ann.data.has_sentiment
    assert ann.band_h > 0 and ann.strip_h == single.strip_h + ann.band_h and single.band_h == 0
    # the band under the class probabilities: a green bar up for the positive utterance, a red
    # one down for the negative one, from the centre line
    band = ann.strip[ann.strip_h - ann.band_h:]
    mid = (ann.band_h + 1) // 2
    up, down = band[:, ann.x_of(1.2)], band[:, ann.x_of(3.0)]
    assert up[mid - 2][1] > 150 and up[mid - 2][2] < 100 and up[mid + 2].max() < 60
    assert down[mid + 2][2] > 150 and down[mid + 2][1] < 100 and down[mid - 2].max() < 60
    # the class probabilities above it are as with one head
    top = ann.strip[: ann.strip_h - ann.band_h]
    assert top[2][ann.x_of(3.0)][0] > 150  # 'sad' (blue) on top in utterance 2
    # the panel is taller by the sentiment lines: rows below the single-head panel are drawn
    below = slice(int(8 * ann.scale) + int((16 * 5 + 8) * ann.scale), int(8 * ann.scale) + int((16 * 7 + 8) * ann.scale))
    frame = _annotate(ann, 1.2, tmp_path)
    plain = _annotate(single, 1.2, tmp_path)
    assert not np.array_equal(frame[below, 10:150], plain[below, 10:150])
    # the timeline plot gets a sentiment row
    one = cv2.imread(str(render_timeline_png(data=_data(model=True), path=tmp_path / "one.png", title="clip")))
    two = cv2.imread(str(render_timeline_png(data=ann.data, path=tmp_path / "two.png", title="clip")))
    assert two.shape[0] > one.shape[0] and two.std() > 10


def test_a_neutral_sentiment_is_drawn_grey_whatever_its_score(tmp_path):
    """The bar of "neutral -0.35" is grey, not the red of "negative": the colour is the label's,
    the length the score's (the GRID clip's utterance read as neutral -0.35 was drawn red)."""
    data = _two_heads(_data(model=True))
    data.sentiments = [("neutral", -0.35), ("negative", -0.6)]
    ann = Annotator(data, width=W, height=H)
    band = ann.strip[ann.strip_h - ann.band_h:]
    mid = (ann.band_h + 1) // 2
    neutral, negative = band[mid + 1, ann.x_of(1.2)].astype(int), band[mid + 1, ann.x_of(3.0)].astype(int)
    assert np.ptp(neutral) < 10 and 120 < neutral.mean() < 180  # grey, below the centre line
    assert negative[2] > 150 and negative[1] < 100  # red
    assert band[mid - 2, ann.x_of(1.2)].max() < 60  # a negative score: nothing above the line
    assert sentiment_colour("neutral") == sentiment_colour("anything else") != sentiment_colour("negative")


@pytest.mark.parametrize("t", [0.2, 0.6, 1.7, 2.5, 3.9], ids=lambda t: f"t{t}")
def test_prediction_panel_drawn_once_per_utterance_equals_drawing_it_on_the_frame(t):
    """The panel is captured once per utterance as a layer (offset + frame * gain) and composited;
    on a textured frame it matches drawing the panel straight onto it, to rounding."""
    ann = Annotator(_two_heads(_data(model=True)), width=W, height=H)
    u = ann.utterance_at(t)
    direct = _background()
    ann._draw_panel(direct, u)
    layered = _background()
    ann._draw_prediction(layered, t)
    diff = np.abs(direct.astype(int) - layered.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    assert not np.array_equal(layered, _background())  # something was drawn
    cached = ann._panel
    ann._draw_prediction(_background(), t)
    assert ann._panel is cached  # same utterance: the layer is reused, not drawn again


def _with_alone(data: OverlayData) -> OverlayData:
    """Utterance 1: the words and the face say happy, the voice sad; utterance 2: one modality (none)."""
    def one(label: str, p: float) -> Prediction:
        rest = (1 - p) / (len(CLASSES) - 1)
        return Prediction(label=label, probabilities={c: p if c == label else rest for c in CLASSES})
    data.alone = [{"text": one("happy", 0.9), "audio": one("sad", 0.6), "vision": one("happy", 0.7)}, None]
    return data


def test_alone_row_in_panel_and_lanes_in_timeline(tmp_path):
    plain = Annotator(_two_heads(_data(model=True)), width=W, height=H)
    ann = Annotator(_with_alone(_two_heads(_data(model=True))), width=W, height=H)
    assert ann.data.has_alone and not plain.data.has_alone
    assert ann.data.alone_at(1) == {} and ann.data.alone_at(None) == {} and set(ann.data.alone_at(0)) == {"text", "audio", "vision"}
    # one panel row more, under the weights: the voice's 'sad' in sad's colour (blue), the words'
    # and the face's 'happy' in happy's (yellow)
    frame, before = _annotate(ann, 1.2, tmp_path), _annotate(plain, 1.2, tmp_path)
    panel = (slice(0, H // 2), slice(0, 260))
    changed = np.flatnonzero((frame[panel] != before[panel]).any(axis=(1, 2)))
    assert changed.size and changed.min() > int(16 * 7 * ann.scale)  # below the rows drawn before

    def colours(img):
        px = img[changed.min():changed.max() + 1, :260].reshape(-1, 3).astype(int)
        blue = (px[:, 0] > 150) & (px[:, 1] > 80) & (px[:, 1] < 160) & (px[:, 2] < 90)
        yellow = (px[:, 1] > 170) & (px[:, 2] > 200) & (px[:, 0] < 90)
        return blue.sum(), yellow.sum()

    assert min(colours(frame)) > 5
    # utterance 2 used one modality: the row's space is there, empty
    assert colours(_annotate(ann, 3.0, tmp_path)) == (0, 0)
    # the timeline plot gets a lane per modality
    without = cv2.imread(str(render_timeline_png(data=plain.data, path=tmp_path / "plain.png", title="clip")))
    with_alone = cv2.imread(str(render_timeline_png(data=ann.data, path=tmp_path / "alone.png", title="clip")))
    assert with_alone.shape[0] > without.shape[0]
    extra = with_alone.reshape(-1, 3).astype(int)
    # translucent yellow (happy) and blue (sad) bars appear that the plain plot does not have
    assert ((extra[:, 1] > 200) & (extra[:, 2] > 220) & (extra[:, 0] < 200) & (extra[:, 0] > 90)).sum() > 500


def test_alone_answers_of_a_regression_checkpoint_are_scores(tmp_path):
    data = _data(model=True)
    data.label_spec = LabelSpec(task="regression", range=(-3.0, 3.0))
    data.predictions = [Prediction(score=2.5), Prediction(score=-2.0)]
    data.alone = [{"audio": Prediction(score=-2.5), "vision": Prediction(score=2.0)}, None]
    ann = Annotator(data, width=W, height=H)
    frame = _annotate(ann, 1.2, tmp_path)
    px = frame[: H // 2, :260].reshape(-1, 3).astype(int)
    # the voice's -2.50 in the negative colour (red), the face's +2.00 in the positive one (green)
    assert ((px[:, 2] > 150) & (px[:, 1] < 110) & (px[:, 0] < 110)).sum() > 5
    assert ((px[:, 1] > 150) & (px[:, 2] < 110) & (px[:, 0] < 110)).sum() > 5
    png = cv2.imread(str(render_timeline_png(data=data, path=tmp_path / "r.png", title="clip")))
    assert png.shape[0] == 860  # 7.2 + 1.4 inches: the lanes of each modality alone, no sentiment row
