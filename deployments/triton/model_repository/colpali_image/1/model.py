"""Triton Python backend model: ColPali embeddings of document page images.

The contract with colpali-gateway (model/model.go there):

    input  "image"       BYTES  [batch, 1]            one encoded page (PNG or
                                                      JPEG) per item
    output "embeddings"  FP16   [batch, tokens, 128]  L2-normalised vectors,
                                                      real rows first, then
                                                      zero rows up to the
                                                      request's longest item
    output "num_tokens"  INT32  [batch, 1]            real rows of each item

Triton's dynamic batcher may hand several requests to one execute() call. They
are run as one GPU batch and split back into one response per request, each
padded only to its own longest item. A request with bad input (bytes that
Pillow cannot open as an image of an allowed format, or an image over the
pixel limit) fails alone with INVALID_ARG; the other requests still get their
embeddings.

Settings come from the "parameters" of config.pbtxt: model_id, dtype,
revision, image_formats and max_image_pixels.
"""

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from colpali_engine.models import ColPali, ColPaliProcessor
from PIL import Image

INPUT_NAME = "image"
EMBEDDINGS_OUTPUT = "embeddings"
NUM_TOKENS_OUTPUT = "num_tokens"
EMBEDDING_DIM = 128

DEFAULT_MODEL_ID = "vidore/colpali-v1.3"
DEFAULT_DTYPE = "bfloat16"
DEFAULT_IMAGE_FORMATS = "PNG,JPEG"
DEFAULT_MAX_IMAGE_PIXELS = "40000000"
# Pages are decoded on a few threads: Pillow releases the GIL while it
# decodes, and a batch of 16 large PNGs decoded one after the other would
# keep the GPU waiting.
DECODE_THREADS = min(8, os.cpu_count() or 1)
DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


class BadInput(Exception):
    """A request's own input is wrong: it fails that request, with INVALID_ARG."""


def config_parameter(model_config, key, default):
    """The string value of config.pbtxt's parameter key, or default when unset or empty."""
    value = model_config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value else default


def triton_error(message, code_name):
    """A pb_utils.TritonError with the named code (INVALID_ARG, INTERNAL, ...).

    Error codes exist since Triton 23.09; on an older server the error keeps
    Triton's default code (INTERNAL) but still carries the message.
    """
    code = getattr(pb_utils.TritonError, code_name, None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


def error_response(message, code_name):
    return pb_utils.InferenceResponse(output_tensors=[], error=triton_error(message, code_name))


def pack_rows(embeddings, attention_mask):
    """Move each item's real token rows to the front and zero the others.

    ColPali returns one row per input position, [batch, positions, 128], with
    the rows of padding positions multiplied by the attention mask. Where the
    tokenizer put its padding (left or right) is its own choice; the contract
    wants the real rows first, so they are gathered to the front, in their
    original order, whatever the padding side.

    Returns (float16 numpy [batch, positions, 128], int32 numpy [batch]).
    """
    mask = attention_mask.to(dtype=torch.bool, device=embeddings.device)
    counts = mask.sum(dim=1)
    # A stable sort on "is padding" (0 for real, 1 for padding) lists the real
    # positions first and keeps their order.
    order = torch.sort((~mask).to(torch.int32), dim=1, stable=True).indices
    packed = torch.gather(embeddings, 1, order.unsqueeze(-1).expand_as(embeddings))
    # Zero the padding rows explicitly: a masked row is 0 * x, which is NaN
    # rather than 0 if x was not finite.
    keep = torch.gather(mask, 1, order).unsqueeze(-1)
    packed = torch.where(keep, packed, torch.zeros((), dtype=packed.dtype, device=packed.device))
    # Cast on the GPU, then copy once: numpy has no bfloat16, and FP16 is what
    # the contract sends.
    packed = packed.to(torch.float16)
    return packed.cpu().numpy(), counts.to(torch.int32).cpu().numpy()


class TritonPythonModel:
    """ColPali page image embeddings behind Triton's Python backend."""

    def initialize(self, args):
        """Load ColPali and its processor once, on this instance's device."""
        model_config = json.loads(args["model_config"])
        self.model_name = model_config.get("name", "colpali_image")
        model_id = config_parameter(model_config, "model_id", DEFAULT_MODEL_ID)
        dtype_name = config_parameter(model_config, "dtype", DEFAULT_DTYPE).lower()
        revision = config_parameter(model_config, "revision", None)
        if dtype_name not in DTYPES:
            raise ValueError(
                f"{self.model_name}: parameter dtype {dtype_name!r}: want one of {sorted(DTYPES)}"
            )
        dtype = DTYPES[dtype_name]

        # Decoding limits, applied per item before the model sees anything.
        formats = config_parameter(model_config, "image_formats", DEFAULT_IMAGE_FORMATS)
        self.image_formats = [f.strip().upper() for f in formats.split(",") if f.strip()]
        max_pixels = config_parameter(model_config, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
        try:
            self.max_image_pixels = int(max_pixels)
        except ValueError:
            self.max_image_pixels = 0  # reported just below
        if not self.image_formats or self.max_image_pixels < 1:
            raise ValueError(
                f"{self.model_name}: parameters image_formats {formats!r} and max_image_pixels"
                f" {max_pixels!r}: want at least one format and a positive pixel count"
            )
        # Our own limit is the stricter check (it fails the request cleanly);
        # Pillow's decompression-bomb check is kept as a second line, never lower.
        if Image.MAX_IMAGE_PIXELS is not None:
            Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, self.max_image_pixels)
        self.decoder = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")

        # Triton places each instance of a KIND_GPU group on one GPU and says
        # which; load the model there, not on whatever device is current.
        if args.get("model_instance_kind") == "GPU":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"{self.model_name}: instance_group asks for a GPU but torch sees no CUDA device"
                )
            self.device = torch.device("cuda", int(args["model_instance_device_id"]))
            torch.cuda.set_device(self.device)
        else:
            # A KIND_CPU instance is only good for smoke tests of this file;
            # half precision matrix products are slow or missing on CPUs.
            self.device = torch.device("cpu")
            dtype = torch.float32

        pb_utils.Logger.log_info(
            f"{self.model_name}: loading {model_id}"
            f"{'@' + revision if revision else ''} as {dtype} on {self.device}"
        )
        # eval(): no dropout; inference_mode() in execute(): no autograd state.
        self.model = ColPali.from_pretrained(
            model_id, torch_dtype=dtype, device_map=str(self.device), revision=revision
        ).eval()
        self.processor = ColPaliProcessor.from_pretrained(model_id, revision=revision)

        dim = getattr(self.model, "dim", EMBEDDING_DIM)
        if dim != EMBEDDING_DIM:
            raise ValueError(
                f"{self.model_name}: {model_id} makes {dim}-d vectors; config.pbtxt says {EMBEDDING_DIM}"
            )

        # One tiny batch now, so that a broken install or model fails the
        # load (the model never turns ready) instead of the first request, and
        # so that CUDA's one-time set-up is not paid by a caller.
        self._embed([Image.new("RGB", (448, 448), "white")])
        pb_utils.Logger.log_info(f"{self.model_name}: ready")

    def execute(self, requests):
        """Embed every request's pages as one GPU batch; one response per request."""
        responses = [None] * len(requests)

        # 1. Start decoding every page of every request, all on the pool.
        pending = []  # (request index, one future per page)
        for index, request in enumerate(requests):
            if is_cancelled(request):
                responses[index] = error_response("request cancelled before it ran", "CANCELLED")
                continue
            try:
                items = self._items(request)
            except BadInput as exc:
                responses[index] = error_response(f"{self.model_name}: {exc}", "INVALID_ARG")
                continue
            pending.append(
                (index, [self.decoder.submit(self._open_image, pos, item) for pos, item in enumerate(items)])
            )

        # 2. Collect the pages, remembering which rows of the combined batch
        #    belong to which request. A request with a bad page is answered
        #    now and left out of the batch; the others go on.
        images = []
        spans = []  # (request index, first row, end row) in images
        for index, futures in pending:
            try:
                decoded = [future.result() for future in futures]
            except BadInput as exc:
                responses[index] = error_response(f"{self.model_name}: {exc}", "INVALID_ARG")
                continue
            spans.append((index, len(images), len(images) + len(decoded)))
            images.extend(decoded)

        # 3. Run the batch and split it back per request.
        if spans:
            for index, response in self._respond(spans, images):
                responses[index] = response
        return responses

    def finalize(self):
        """Free the GPU memory held by this instance when Triton unloads it."""
        self.decoder.shutdown(wait=True)
        self.model = None
        self.processor = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _items(self, request):
        """The request's encoded pages as a list of bytes, or BadInput."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        if tensor is None:
            raise BadInput(f"input {INPUT_NAME!r} is missing")
        # BYTES tensors arrive as numpy object arrays of bytes, [batch, 1].
        items = tensor.as_numpy().reshape(-1)
        if len(items) == 0:
            raise BadInput(f"input {INPUT_NAME!r} has no items")
        return [bytes(item) for item in items]

    def _open_image(self, position, data):
        """One encoded page as an RGB image, or BadInput saying why not."""
        if not data:
            raise BadInput(f"item {position}: image is empty")
        try:
            # open() reads only the header: format and size are known before
            # any pixel is decoded, so an oversized image costs nothing.
            with Image.open(io.BytesIO(data), formats=self.image_formats) as image:
                width, height = image.size
                if width * height > self.max_image_pixels:
                    raise BadInput(
                        f"item {position}: image is {width}x{height} pixels,"
                        f" over the limit of {self.max_image_pixels}"
                    )
                # load() decodes now, so a truncated or corrupt file fails
                # here, against its own request, and not later inside the
                # processor where the whole batch would fail with it.
                image.load()
                # ColPali wants 3-channel RGB; pages may be greyscale, palette
                # or RGBA PNGs, or CMYK JPEGs.
                return image.convert("RGB")
        except BadInput:
            raise
        except Image.UnidentifiedImageError:
            # No allowed decoder recognised the header: wrong format or not an
            # image at all. (Pillow's own message names only a BytesIO.)
            raise BadInput(
                f"item {position}: the {len(data)} bytes are not a {self._allowed()} image"
            ) from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
            raise BadInput(
                f"item {position}: cannot decode the {len(data)} bytes as a {self._allowed()} image"
                f" ({type(exc).__name__}: {exc})"
            ) from None

    def _allowed(self):
        return " or ".join(self.image_formats)

    def _respond(self, spans, images):
        """(request index, response) for every span, embedding all of them at once.

        Should the combined batch fail (out of GPU memory, or one input that
        trips the model), each request is retried alone, so that one bad
        request or an oversized merge does not fail the others with it.
        """
        try:
            return self._split(spans, *self._embed(images))
        except Exception as exc:  # noqa: BLE001 - any failure is answered, not raised
            release_cached_memory()
            if len(spans) == 1:
                return [(spans[0][0], self._failure(exc))]
            pb_utils.Logger.log_warn(
                f"{self.model_name}: batch of {len(spans)} requests failed ({exc!r}); retrying each alone"
            )
        results = []
        for index, start, end in spans:
            try:
                results += self._split([(index, 0, end - start)], *self._embed(images[start:end]))
            except Exception as exc:  # noqa: BLE001
                release_cached_memory()
                results.append((index, self._failure(exc)))
        return results

    def _embed(self, images):
        """ColPali on a list of RGB images: packed float16 rows and real-row counts."""
        # The processor resizes each page to the model's 448x448 input (a
        # 32x32 grid of 14 px patches, 1024 image tokens), normalises the
        # pixels and adds ColPali's short text prompt.
        batch = self.processor.process_images(images).to(self.device)
        with torch.inference_mode():
            embeddings = self.model(**batch)
        return pack_rows(embeddings, batch["attention_mask"])

    def _split(self, spans, embeddings, counts):
        """One response per span, padded only to that request's longest item."""
        results = []
        for index, start, end in spans:
            rows = counts[start:end]
            width = int(rows.max())
            part = embeddings[start:end, :width]
            if not np.isfinite(part).all():
                # float16 weights can overflow; say so instead of sending NaN.
                results.append(
                    (index, error_response(
                        f"{self.model_name}: the model produced non-finite embeddings"
                        " (with dtype float16, try bfloat16)", "INTERNAL"))
                )
                continue
            outputs = [
                pb_utils.Tensor(EMBEDDINGS_OUTPUT, np.ascontiguousarray(part)),
                pb_utils.Tensor(NUM_TOKENS_OUTPUT, rows.reshape(-1, 1).astype(np.int32)),
            ]
            results.append((index, pb_utils.InferenceResponse(output_tensors=outputs)))
        return results

    def _failure(self, exc):
        pb_utils.Logger.log_error(f"{self.model_name}: inference failed: {exc!r}")
        return error_response(f"{self.model_name}: inference failed: {type(exc).__name__}: {exc}", "INTERNAL")


def is_cancelled(request):
    """Whether the client gave up on the request (Triton 23.10 and later can tell)."""
    check = getattr(request, "is_cancelled", None)
    return bool(check()) if check is not None else False


def release_cached_memory():
    """After a failure (often out of memory), give cached blocks back before retrying."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
