"""`mfsa-pipe extract VIDEO --out FEATURES.npz`: the three modality sequences of one file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from extractors.config import ExtractionConfig, TextConfig, VisionConfig
from extractors.pipeline import extract
from mfsa_pipe.commands.console import fail, plain_console, reported, styled
from mfsa_pipe.commands.native_logs import held_stderr, quiet_native_logs
from mfsa_pipe.devices import check_device


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("extract")(extract_command)


def extract_command(
    video: Path = typer.Argument(..., help="Video or audio file (mp4, mov, mkv, avi, mpg, webm, flv, wav, flac, mp3 ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the features (.npz: sequences, times, column names)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the extraction cache."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache directory (default: $MFSA_PIPE_CACHE or ~/.cache/mfsa-pipe)."
    ),
    asr_model: str = typer.Option("tiny.en", "--asr-model", help="faster-whisper model name or directory (tiny.en ships offline)."),
    language: Optional[str] = typer.Option(None, "--language", help="Spoken language code (default: the model's detection)."),
    vectors: str = typer.Option("glove-6b-50d", "--vectors", help="Word vectors: a registered name, a GloVe .txt / word2vec / .kv path, or a gensim-data name."),
    lexicon: str = typer.Option("", "--lexicon", help="A word-valence column after the vectors: vader, or none (the default; the default model uses none)."),
    vision_backend: str = typer.Option("mesh", "--vision-backend", help="Facial backend: mesh (offline default) or py-feat."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when the backend can use it), cpu or cuda."),
) -> None:
    """Extract text, acoustic and facial sequences at their native rates and save them."""
    quiet_native_logs()
    console = plain_console()
    with reported(on_interrupt=f"nothing was written to {out}"):
        check_device(device)  # before any work, not after the decode
        try:
            config = ExtractionConfig(
                text=TextConfig(asr_model=asr_model, language=language, vectors=vectors, device=device, lexicon=lexicon),
                vision=VisionConfig(backend=vision_backend, device=device),
            )
        except ValueError as e:  # the options' own validation
            raise fail(f"invalid option: {e}") from None
        with held_stderr(), console.status("probing", spinner="dots") as status:
            result = extract(video, config=config, cache_dir=False if no_cache else cache_dir,
                             progress=lambda stage: status.update(styled(f"{stage} {video.name}")))
    try:
        result.save(out)
    except OSError as e:
        raise fail(f"cannot write {out}: {e.strerror or e}", code=1) from None
    console.print(_summary(result, out))


def _summary(result, out: Path):
    from rich.table import Table

    media, timings = result.media, result.timings
    table = Table(title=f"{Path(media.path).name}", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    streams = []
    if media.has_video:
        fps = f"{media.fps:.2f} fps" if media.fps else "? fps"
        streams.append(f"video {media.width}x{media.height} {fps} {media.video_codec}")
    if media.has_audio:
        streams.append(f"audio {media.audio_codec} {media.audio_sample_rate} Hz")
    table.add_row("media", f"{media.duration_s:.2f} s, {media.container}; " + ", ".join(streams))

    def rows(seq, unit: str) -> str:
        if seq.length == 0:
            return f"none ({seq.meta.get('empty_reason', 'empty')})"
        return f"{seq.length} {unit} x {seq.dim}"

    text, audio, vision = result.text, result.audio, result.vision
    words = rows(text, "words")
    if text.length:
        words += f", OOV rate {100 * float(text.meta.get('oov_rate', 0.0)):.1f}%"
    table.add_row("text", words)
    acoustic = rows(audio, f"frames @ {audio.rate:g} Hz")
    if audio.length:
        acoustic += f", voice activity {100 * float(audio.meta.get('voice_activity_fraction', 0.0)):.0f}%"
    table.add_row("acoustic", acoustic)
    facial = rows(vision, f"frames @ {vision.rate:g} Hz")
    if vision.length:
        facial += f", face coverage {100 * float(vision.meta.get('face_coverage', 0.0)):.0f}%"
    table.add_row("facial", facial)
    if result.cached:
        table.add_row("time", f"{timings.get('total', 0.0):.2f} s (read from the cache)")
    else:
        stages = ("decode", "speech", "vectors", "acoustic", "facial")
        per = ", ".join(f"{s} {timings[s]:.2f}" for s in stages if s in timings)
        total = timings.get("total", 0.0)
        rate = f" ({total / media.duration_s:.2f} s per s of media)" if media.duration_s else ""
        table.add_row("time", f"{total:.2f} s{rate}: {per}")
    table.add_row("saved", str(out))
    return table
