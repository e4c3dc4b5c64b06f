"""The annotated video file: decode, draw (`Annotator`), encode.

The video keeps the original frames (display orientation, resolution, frame rate) and audio.
OpenCV converts between yuv420p and BGR (half swscale's CPU). The encoder dominates: libx264
`superfast` (a preview video: ~35% less encoder CPU than `veryfast` for about twice the bytes at
the same CRF). Frames stream from decoder to encoder, so memory does not grow with the video's length.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import cv2
import numpy as np

from mfsa_pipe.analysis.render.annotator import Annotator
from mfsa_pipe.atomic import atomic_path


@dataclass
class RenderStats:
    frames: int
    seconds: float
    codec: str
    audio: bool
    audio_copied: bool = False  # AAC input: its packets copied, not re-encoded


def _video_codec() -> tuple[str, dict[str, str]]:
    import av

    for name, options in (("libx264", {"preset": "superfast", "crf": "23"}), ("h264", {}), ("mpeg4", {"qscale": "3"})):
        try:
            av.codec.Codec(name, "w")
            return name, options
        except Exception:  # noqa: BLE001 - a missing encoder raises codec-specific errors
            continue
    raise RuntimeError("no H.264 or MPEG-4 encoder in this PyAV build")


def render_video(
    *, src: str | os.PathLike, dst: str | os.PathLike, annotator: Annotator,
    progress: Callable[[float], None] | None = None,
) -> RenderStats:
    """Decode `src`, draw the overlay on every frame, encode H.264 at the source frame rate with
    the original audio (AAC copied, other codecs re-encoded to AAC), and write `dst` atomically
    (temp name, then rename)."""
    import av

    began = time.perf_counter()
    codec, options = _video_codec()
    with av.open(str(src)) as inp:
        vin = next((s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
        if vin is None:
            raise ValueError(f"{src}: has no video stream to annotate")
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        t0 = inp.start_time / av.time_base if inp.start_time is not None else 0.0
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001 * 1000)
        width, height = annotator.width, annotator.height
        ew, eh = width - width % 2, height - height % 2  # yuv420p needs even sizes
        duration = annotator.data.duration_s
        with atomic_path(dst) as tmp:
            with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
                vout = out.add_stream(codec, rate=rate)
                vout.width, vout.height, vout.pix_fmt = ew, eh, "yuv420p"
                vout.options = options
                vout.thread_type = "AUTO"
                vout.codec_context.time_base = 1 / rate
                audio = _audio_track(out, ain, t0=t0) if ain is not None else None
                frames, last_pts = 0, -1
                streams = [vin] + ([ain] if audio is not None else [])
                for packet in inp.demux(streams):
                    if packet.stream is vin:
                        for frame in _decode(packet):
                            t = (frame.time - t0) if frame.time is not None else frames / float(rate)
                            img = _to_bgr(frame)
                            turns = (int(round((frame.rotation or 0) / 90.0)) % 4)
                            if turns:
                                img = np.ascontiguousarray(np.rot90(img, k=turns))
                            annotator.draw(img, t)
                            if (ew, eh) != (width, height):
                                img = np.ascontiguousarray(img[:eh, :ew])
                            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
                            pts = max(last_pts + 1, int(round(t * rate)))  # strictly increasing
                            vf.pts, vf.time_base, last_pts = pts, 1 / rate, pts
                            out.mux(vout.encode(vf))
                            frames += 1
                            if progress and duration > 0 and frames % 15 == 0:
                                progress(min(1.0, t / duration))
                    elif audio is not None:
                        audio.mux(packet)
                out.mux(vout.encode(None))
                if audio is not None:
                    audio.flush()
    if progress:
        progress(1.0)
    return RenderStats(frames=frames, seconds=time.perf_counter() - began, codec=codec, audio=audio is not None,
                       audio_copied=isinstance(audio, _AudioCopy))


def _to_bgr(frame) -> np.ndarray:
    """A decoded frame as BGR; OpenCV converts the usual yuv420p in half the CPU of swscale."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _decode(packet):
    """Decode a packet; a damaged packet near the end is skipped rather than failing the video."""
    import av

    try:
        return packet.decode()
    except av.error.InvalidDataError:
        return []


def _audio_track(out, ain, *, t0: float) -> "_AudioCopy | _AudioEncode":
    """The input's audio in the output: mono or stereo AAC is copied packet by packet (a third of
    the rendering time went to decoding and re-encoding it), anything else is encoded to AAC."""
    if ain.codec_context.name == "aac" and (ain.codec_context.channels or 0) in (1, 2):
        return _AudioCopy(out, ain, t0=t0)
    return _AudioEncode(out, ain, t0=t0)


class _AudioCopy:
    def __init__(self, out, ain, *, t0: float) -> None:
        self.out = out
        self.stream = out.add_stream_from_template(ain)
        self.shift = int(round(t0 / ain.time_base))  # onto the video's timeline, as decoded frames are

    def mux(self, packet) -> None:
        if packet.size == 0 or packet.dts is None:  # the demuxer's end-of-stream packets
            return
        packet.dts -= self.shift
        if packet.pts is not None:
            packet.pts -= self.shift
        packet.stream = self.stream
        self.out.mux(packet)

    def flush(self) -> None:
        pass


class _AudioEncode:
    def __init__(self, out, ain, *, t0: float) -> None:
        rate = ain.codec_context.sample_rate or 44100
        channels = ain.codec_context.channels or 2
        layout = "mono" if channels == 1 else "stereo"  # AAC-LC in mp4: keep it to what every player plays
        self.out, self.t0 = out, t0
        self.stream = out.add_stream("aac", rate=rate, layout=layout)
        self.stream.codec_context.bit_rate = 128_000 if channels > 1 else 96_000

    def mux(self, packet) -> None:
        for frame in _decode(packet):
            if frame.time is not None:
                frame.pts = int(round((frame.time - self.t0) * frame.sample_rate))
                frame.time_base = Fraction(1, frame.sample_rate)
            self.out.mux(self.stream.encode(frame))

    def flush(self) -> None:
        self.out.mux(self.stream.encode(None))
