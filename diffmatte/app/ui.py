"""The interactive matting page (Gradio): controls laid out over :mod:`diffmatte.app.session`.

Uploads are taken as files and read with the library's readers, exactly as ``run_one_image.py``
reads its inputs; pictures shown in the page are PNG, so nothing is lossily re-encoded. Every
problem with the inputs is written into the page's status line and the app keeps serving.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from diffmatte.app import session
from diffmatte.app.session import AppInputError
from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.inference import InferenceOptions
from diffmatte.inference.options import DEFAULT_MAX_TILE_BYTES

__all__ = ["build_app", "launch"]

TITLE = "DiffMatte: interactive matting"
BRUSH_COLOURS = ["#ffffff", "#000000", "#808080"]  # foreground, background, unknown
NO_CHECKPOINT = (
    "**No trained checkpoint found.** Put a released or trained `.pth` file in `{folder}/` "
    "(then reload the page) or type its path below. `python tools/quickstart.py` trains a small "
    "model in a few minutes on the CPU; its checkpoint is offered here once it exists. The app "
    "never runs a model without trained weights."
)


def _paint_layer(editor_value: dict | None) -> np.ndarray | None:
    """The RGBA paint layer of the image editor, or None when nothing is painted."""
    if not editor_value or not editor_value.get("layers"):
        return None
    layer = np.asarray(editor_value["layers"][0])
    if layer.ndim != 3 or layer.shape[2] != 4 or not layer[:, :, 3].any():
        return None
    return layer


def _trimap(image_shape, source, trimap_file, editor_value, mask_file, band, inside, grow):
    return session.read_trimap(
        source,
        image_shape,
        trimap_file=trimap_file,
        paint_layer=_paint_layer(editor_value),
        mask_file=mask_file,
        band_width=int(band),
        inside_width=int(inside),
        grow=int(grow),
    )


def preview(image_file, source, trimap_file, editor_value, mask_file, band, inside, grow):
    """The trimap over the image and a line about it (or about what is missing)."""
    try:
        image = session.read_input_image(image_file)
        summary, _ = _trimap(
            image.shape, source, trimap_file, editor_value, mask_file, band, inside, grow
        )
    except AppInputError as err:
        return None, f"⚠ {err}"
    note = f" (snapped from {summary.grey_levels} grey levels)" if summary.snapped else ""
    return session.trimap_overlay(image, summary.trimap), f"Trimap {summary.describe()}{note}"


def _background(colour: str, background_file: str | None) -> np.ndarray:
    if background_file:
        return session.read_input_image(background_file, "background image")
    return session.parse_colour(colour)


def _editor_value(image_file: str | None) -> dict | None:
    """The editor reset to the image as its background, with nothing painted."""
    return None if not image_file else {"background": image_file, "layers": [], "composite": None}


def build_app(
    checkpoints_dir: str | os.PathLike = "checkpoints",
    root: str | os.PathLike = ".",
    cache: session.ModelCache | None = None,
) -> gr.Blocks:
    """The page.

    Args:
        checkpoints_dir: folder scanned for checkpoint files.
        root: folder with ``configs/`` and the quickstart's ``output/`` (the working directory).
        cache: the model cache (a new one if None); shared by every visitor of the page.
    """
    cache = session.ModelCache() if cache is None else cache
    found = session.find_checkpoints(checkpoints_dir, root)
    configs = session.list_configs(root)
    lemur = bundled_lemur_dir()
    first = found[0] if found else None
    # One folder for the downloads of this page; runs are serial (concurrency 1), and Gradio
    # copies each result's files into its own cache before the next run overwrites them.
    output_dir = tempfile.mkdtemp(prefix="diffmatte-app-")

    def run(
        image_file, source, trimap_file, editor_value, mask_file, band, inside, grow,
        checkpoint, checkpoint_path, config, device, precision, tile_mib, strategy, seed,
        colour, background_file, progress=gr.Progress(),  # noqa: B008 (how Gradio asks)
    ):  # fmt: skip
        empty = (None, None, None, None, "", None)
        try:
            image = session.read_input_image(image_file)
            summary, _ = _trimap(
                image.shape, source, trimap_file, editor_value, mask_file, band, inside, grow
            )
            background = _background(colour, background_file)
            if tile_mib is None or seed is None:
                raise AppInputError("tile memory and seed need a value")
            try:
                options = InferenceOptions(
                    precision=precision, max_tile_bytes=max(1, int(tile_mib)) * 2**20
                )
            except ValueError as err:
                raise AppInputError(str(err)) from None
            predictor, load_seconds = cache.get(
                config, (checkpoint_path or "").strip() or checkpoint, options, device
            )

            def report(step: int, steps: int) -> None:
                progress((step, steps), desc=f"{strategy}: step {step}/{steps}")

            stem = Path(image_file).stem
            result = session.run_matting(
                predictor, image, summary, strategy, seed, background, output_dir, stem, report
            )
        except AppInputError as err:
            return (f"⚠ {err}", *empty)
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory on a huge image
            return (f"⚠ prediction failed: {' '.join(str(err).split())[:300]}", *empty)
        result.timings = {"load model": load_seconds, **result.timings}
        steps = len(result.trajectory)
        gallery = [
            (frame, f"x̂0 after step {k + 1}/{steps}") for k, frame in enumerate(result.trajectory)
        ]
        height, width = result.alpha.shape
        status = f"Done: {width}x{height}, {strategy}, seed {int(seed)}."
        files = [str(path) for path in result.files]
        return (
            status, result.alpha_png, result.over_checkerboard, result.over_background, gallery,
            result.describe_timings(), files,
        )  # fmt: skip

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nUpload an image, give a trimap, choose a checkpoint, run.")
        if not found:
            gr.Markdown(NO_CHECKPOINT.format(folder=checkpoints_dir), elem_id="no-checkpoint")
        with gr.Row():
            with gr.Column(scale=1):
                image_file = gr.File(
                    label="Image", file_types=["image"], type="filepath", elem_id="image-file"
                )
                source = gr.Radio(
                    [
                        ("Upload a trimap", "upload"),
                        ("Paint over the image", "paint"),
                        ("Generate from a rough mask", "mask"),
                    ],
                    value="upload",
                    label="Trimap source",
                    elem_id="trimap-source",
                )
                with gr.Group(visible=True) as upload_group:
                    trimap_file = gr.File(
                        label="Trimap (dark background, mid-grey unknown, bright foreground)",
                        type="filepath",
                        elem_id="trimap-file",
                    )
                with gr.Group(visible=False) as paint_group:
                    editor = gr.ImageEditor(
                        label="Paint: white = foreground, black = background, grey = unknown",
                        type="numpy",
                        image_mode="RGBA",
                        sources=(),
                        transforms=(),
                        layers=False,
                        format="png",
                        brush=gr.Brush(colors=BRUSH_COLOURS, color_mode="fixed", default_size=12),
                        elem_id="paint-editor",
                    )
                    grow = gr.Slider(0, 100, value=0, step=1, label="Band around strokes (px)")
                with gr.Group(visible=False) as mask_group:
                    mask_file = gr.File(
                        label="Rough mask (bright = object)", type="filepath", elem_id="mask-file"
                    )
                    band = gr.Slider(
                        0, 200, value=10, step=1, label="Band width outside (px)", elem_id="band"
                    )
                    inside = gr.Slider(0, 200, value=10, step=1, label="Band width inside (px)")
                gr.Examples(
                    [[str(lemur / "image" / "lemur.png"), str(lemur / "trimap" / "lemur.png")]],
                    inputs=[image_file, trimap_file],
                    label="Example (CC0 lemur photograph and its trimap)",
                    elem_id="lemur-example",
                )
                overlay = gr.Image(
                    label="Trimap over the image", format="png", interactive=False,
                    elem_id="trimap-overlay",
                )  # fmt: skip
                trimap_info = gr.Markdown(elem_id="trimap-info")

                with gr.Accordion("Model", open=True):
                    checkpoint = gr.Dropdown(
                        [(choice.label, str(choice.checkpoint)) for choice in found],
                        value=None if first is None else str(first.checkpoint),
                        allow_custom_value=True,
                        label="Checkpoint (from the checkpoints folder, or the quickstart's)",
                        elem_id="checkpoint",
                    )
                    checkpoint_path = gr.Textbox(
                        label="or checkpoint path", placeholder="path/to/model.pth",
                        elem_id="checkpoint-path",
                    )  # fmt: skip
                    config = gr.Dropdown(
                        [(os.path.relpath(path, root), path) for path in configs],
                        value=None if first is None else first.config,
                        allow_custom_value=True,
                        label="Config (the one the checkpoint was trained with; a path works)",
                        elem_id="config",
                    )
                    devices = session.device_choices()
                    device = gr.Dropdown(devices, value=devices[0], label="Device")
                    precision = gr.Dropdown(
                        session.precision_choices(devices[0]), value="fp32", label="Precision"
                    )
                    tile_mib = gr.Number(
                        DEFAULT_MAX_TILE_BYTES // 2**20, precision=0, minimum=1,
                        label="Tile memory (MiB): larger images run the decoder's last blocks in "
                        "tiles of this size (results unchanged)",
                    )  # fmt: skip
                with gr.Accordion("Sampling and display", open=True):
                    strategy = gr.Dropdown(
                        session.STRATEGIES, value="ddim10", allow_custom_value=True,
                        label="Sampling strategy (steps)", elem_id="strategy",
                    )  # fmt: skip
                    seed = gr.Number(8282, precision=0, label="Seed", elem_id="seed")
                    colour = gr.ColorPicker("#2e7d32", label="Background colour for the cut-out")
                    background_file = gr.File(
                        label="or a background image",
                        file_types=["image"],
                        type="filepath",
                        height=120,
                    )
            with gr.Column(scale=1):
                run_button = gr.Button("Run", variant="primary", elem_id="run")
                status = gr.Markdown("Ready.", elem_id="status")
                alpha = gr.Image(
                    label="Alpha matte", format="png", interactive=False, elem_id="alpha"
                )
                over_checker = gr.Image(
                    label="Cut-out over a checkerboard", format="png", interactive=False
                )
                over_colour = gr.Image(
                    label="Cut-out over the colour or background image", format="png",
                    interactive=False,
                )  # fmt: skip
                trajectory = gr.Gallery(
                    label="Trajectory: the alpha predicted at each step (x̂0)", columns=5,
                    height=260, object_fit="contain", format="png", elem_id="trajectory",
                )  # fmt: skip
                timings = gr.Markdown(elem_id="timings")
                downloads = gr.File(
                    label="Downloads: alpha PNG, RGBA PNG, float alpha (.npy)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )

        trimap_inputs = [image_file, source, trimap_file, editor, mask_file, band, inside, grow]
        outputs = [overlay, trimap_info]
        # The one named event lets API clients ask for the preview too.
        source.change(preview, trimap_inputs, outputs, api_name="preview")
        for trigger in (image_file.change, trimap_file.change, mask_file.change, band.release,
                        inside.release, grow.release, editor.change,
                        # A finished stroke is an input event.
                        editor.input, editor.apply):  # fmt: skip
            trigger(preview, trimap_inputs, outputs, api_name=False)
        image_file.change(_editor_value, image_file, editor, api_name=False)
        source.change(
            lambda value: [gr.update(visible=value == name) for name in session.TRIMAP_SOURCES],
            source,
            [upload_group, paint_group, mask_group],
            api_name=False,
        )
        checkpoint.change(
            lambda path: session.guess_config(path, configs) or gr.update(),
            checkpoint,
            config,
            api_name=False,
        )
        device.change(
            lambda value: gr.update(choices=session.precision_choices(value), value="fp32"),
            device,
            precision,
            api_name=False,
        )
        run_button.click(
            run,
            [*trimap_inputs, checkpoint, checkpoint_path, config, device, precision, tile_mib,
             strategy, seed, colour, background_file],
            [status, alpha, over_checker, over_colour, trajectory, timings, downloads],
            api_name="run",
            concurrency_limit=1,
        )  # fmt: skip
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    checkpoints_dir: str | os.PathLike = "checkpoints",
    block: bool = True,
    root: str | os.PathLike = ".",
) -> gr.Blocks:
    """Builds the page and serves it (on this machine only, by default).

    Args:
        host: address to listen on.
        port: port; None picks the first free one from 7860.
        checkpoints_dir: folder scanned for checkpoint files.
        block: serve until interrupted; False returns once the server runs.
        root: folder with ``configs/`` and the quickstart's ``output/``.
    """
    demo = build_app(checkpoints_dir, root)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        ssr_mode=False,
        show_error=True,
        footer_links=["api"],
        allowed_paths=[str(bundled_lemur_dir())],
    )
    return demo
