"""The value that flows along Image and Mask ports."""
from __future__ import annotations

import dataclasses
import threading
from sys import getrefcount
from typing import Any, Callable, NamedTuple

import torch


@dataclasses.dataclass(frozen=True)
class Format:
    """The full frame: width and height in pixels and the pixel aspect ratio."""

    width: int
    height: int
    pixel_aspect: float = 1.0


class Window(NamedTuple):
    """A window of a frame in the tensor's order, rows first: rows y0..y1-1 and columns x0..x1-1
    (:meth:`Image.window`, :meth:`Image.paste`). A plain 4-tuple in that order is taken too."""

    y0: int
    y1: int
    x0: int
    x1: int


class Box(NamedTuple):
    """A rectangle by its corners in image order, x first: (x0, y0) top-left, (x1, y1) bottom-right. An Image's
    ``data_window`` (whole pixels, x1 and y1 exclusive) and a face's ``box`` (the landmarks' bounds, in plate
    pixels) are Boxes; note the order differs from :class:`Window`'s."""

    x0: float
    y0: float
    x1: float
    y1: float

# Guards the one-time materialisation of a patched Image's tensor (an Image may be read from several threads:
# the viewer's, a render's writers).
_materialise_lock = threading.Lock()

_FIELDS = ("channels", "metadata", "faces", "pixel_aspect", "data_window")


class Image:
    """Pixels with their description. Immutable: nodes build new Images with :meth:`replace` and :meth:`paste`.

    Attributes:
        tensor: (C, H, W), scene-linear in the working space; float32 on CPU, float16 or float32 on GPU.
            Pixel (0, 0) is the top-left corner.
        channels: the name of each of the C planes, ("R", "G", "B"), ("R", "G", "B", "A") or ("A",) for a Mask.
        metadata: header-like information; ``doublure/...`` keys (provenance) are written into every frame.
        faces: the frame's faces (``doublure.faces.Face``) attached by FaceDetect, read by the nodes below.
        data_window: a :class:`Box` (x0, y0, x1, y1), the part of the format that holds pixels; the whole frame
            by default.

    A node that changes only a window of its input (a face) returns ``image.paste(window, pixels)``: the new
    Image shares its input's tensor and keeps the window's new pixels beside it, so a chain of face nodes
    does not copy the whole frame once per node (at 1080p each copy, with its page faults, costs about as
    much as a finishing node's own maths). Such nodes read their input with :meth:`window`. ``tensor`` is
    built from the shared one and the pasted windows the first time something asks for the whole frame (a
    Write, the viewer), once per Image.
    """

    # _whole: whether the data window is the whole frame, read after every node that wrote its input in place;
    # _storage: (the tensor's storage, its C++ handle, whether resizable, whether an inference tensor), kept by
    # is_unshared; _on: the torch.device object ``to`` last found the tensor on (None until then)
    __slots__ = ("_base", "_patches", "_nbytes", "_whole", "_storage", "_on", *_FIELDS)

    def __init__(self, tensor: torch.Tensor, channels: tuple[str, ...] = ("R", "G", "B"),
                 metadata: dict[str, Any] | None = None, faces: list | None = None, pixel_aspect: float = 1.0,
                 data_window: "Box | tuple[int, int, int, int] | None" = None) -> None:
        if tensor.dim() != 3:
            raise ValueError(f"Image tensor must be (C, H, W), got shape {tuple(tensor.shape)}")
        if tensor.shape[0] != len(channels):
            raise ValueError(f"Image has {tensor.shape[0]} planes but channels {channels}")
        setattr_ = object.__setattr__
        setattr_(self, "_base", tensor)
        setattr_(self, "_storage", None)
        setattr_(self, "_on", None)
        setattr_(self, "_patches", ())
        setattr_(self, "_nbytes", tensor.element_size() * tensor.nelement())
        setattr_(self, "channels", tuple(channels))
        setattr_(self, "metadata", {} if metadata is None else metadata)
        setattr_(self, "faces", [] if faces is None else faces)
        setattr_(self, "pixel_aspect", pixel_aspect)
        whole = Box(0, 0, int(tensor.shape[2]), int(tensor.shape[1]))
        window = whole if data_window is None else Box(*data_window)
        setattr_(self, "data_window", window)
        setattr_(self, "_whole", window == whole)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Image is immutable: build a new one with replace() (setting {name!r})")

    def __getstate__(self) -> dict:
        return {"tensor": self.tensor, **{name: getattr(self, name) for name in _FIELDS}}

    def __setstate__(self, state: dict) -> None:
        Image.__init__(self, **state)

    def __repr__(self) -> str:
        return (f"Image({self.width}x{self.height}, channels={self.channels}, faces={len(self.faces)}, "
                f"{len(self._patches)} pasted windows)")

    @property
    def tensor(self) -> torch.Tensor:
        """The whole frame (C, H, W); for a patched Image built once, on first use."""
        if self._patches:
            with _materialise_lock:
                if self._patches:
                    object.__setattr__(self, "_base", self.map_pixels(lambda pixels: pixels))
                    object.__setattr__(self, "_storage", None)
                    object.__setattr__(self, "_patches", ())
        return self._base

    def window(self, window: Window) -> torch.Tensor:
        """The pixels of ``window`` (y0, y1, x0, x1), (C, y1 - y0, x1 - x0), without building the whole frame.

        Read-only: the result may share memory with this Image or its inputs; clone it before writing."""
        y0, y1, x0, x1 = window
        patches = self._patches
        pixels = self._base[:, y0:y1, x0:x1]
        copied = False
        for (py0, py1, px0, px1), patch in patches:
            iy0, iy1, ix0, ix1 = max(y0, py0), min(y1, py1), max(x0, px0), min(x1, px1)
            if iy0 >= iy1 or ix0 >= ix1:
                continue
            if not copied:
                pixels, copied = pixels.clone(), True
            pixels[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = patch[:, iy0 - py0:iy1 - py0, ix0 - px0:ix1 - px0]
        return pixels

    def paste(self, window: Window, pixels: torch.Tensor) -> "Image":
        """A new Image, this one with ``pixels`` (C, y1 - y0, x1 - x0) in ``window``; the rest is shared."""
        y0, y1, x0, x1 = (int(v) for v in window)
        if not (0 <= y0 <= y1 <= self.height and 0 <= x0 <= x1 <= self.width):
            raise ValueError(f"window {window} is outside the {self.width}x{self.height} image")
        if tuple(pixels.shape) != (len(self.channels), y1 - y0, x1 - x0):
            raise ValueError(f"pixels {tuple(pixels.shape)} do not fill window {window} of {len(self.channels)} planes")
        if pixels.dtype != self._base.dtype or pixels.device != self._base.device:
            raise ValueError(f"pixels are {pixels.dtype} on {pixels.device}, the image {self._base.dtype} on "
                             f"{self._base.device}")
        image = self.replace()
        object.__setattr__(image, "_patches", self._patches + ((Window(y0, y1, x0, x1), pixels),))
        object.__setattr__(image, "_nbytes", self._nbytes + pixels.element_size() * pixels.nelement())
        return image

    def map_pixels(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` over the whole frame, as a tensor of its own, without building :attr:`tensor` first: for a
        patched Image, ``fn`` of the shared frame with ``fn`` of each pasted window placed over it.

        Args:
            fn: a per-pixel map (each output pixel depends on that input pixel only, as a colour conversion
                does) from (C, h, w) to (C', h, w).

        Returns:
            (C', H, W).
        """
        frame = fn(self._base)
        if frame.untyped_storage().data_ptr() == self._base.untyped_storage().data_ptr():
            frame = frame.clone()  # fn returned (a view of) the shared frame: the windows must not go into it
        for (y0, y1, x0, x1), pixels in self._patches:
            frame[:, y0:y1, x0:x1] = fn(pixels)
        return frame

    @property
    def width(self) -> int:
        return int(self._base.shape[2])

    @property
    def height(self) -> int:
        return int(self._base.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self._base.dtype

    @property
    def format(self) -> Format:
        return Format(self.width, self.height, self.pixel_aspect)

    @property
    def nbytes(self) -> int:
        """Bytes held: the frame and the pasted windows; fixed for the Image's life (the cache adds it on
        insertion and takes it off on removal), so building :attr:`tensor` later does not change it."""
        return self._nbytes

    @property
    def device(self) -> torch.device:
        return self._base.device

    def replace(self, tensor: torch.Tensor | None = None, **changes: Any) -> "Image":
        """A new Image with some attributes changed (the data window follows a new tensor's size). A new
        ``tensor`` is the whole frame: the pasted windows go with the old one. ``replace(tensor=t)`` with this
        Image's own whole-frame tensor (a node that wrote into it in place: ``t.mul_(g)`` returns ``t``) is
        this Image itself: it is immutable, and between two passes of a chain over a frame the size of the
        CPU's cache every object the engine builds or reads costs several times what it does warm (hence
        ``tensor`` by name: that case reads no dict)."""
        if tensor is self._base and not changes and self._whole and not self._patches:
            return self
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"Image has no attribute(s) {sorted(unknown)}")
        if tensor is not None:
            return Image(tensor, **{**{name: getattr(self, name) for name in _FIELDS}, "data_window": None,
                                    **changes})
        image = object.__new__(Image)
        for name in ("_base", "_patches", "_nbytes", "_whole", "_storage", "_on", *_FIELDS):
            object.__setattr__(image, name, changes.get(name, getattr(self, name)))
        if "data_window" in changes:
            object.__setattr__(image, "_whole", tuple(image.data_window) == (0, 0, self.width, self.height))
        return image

    def to(self, device: torch.device) -> "Image":
        """This Image on ``device`` (itself when it is there already).

        The engine asks after every node's compute, with the request's one device object: once the tensor was
        found there, the same object is recognised without asking the tensor again (each ask builds a new
        torch.device, after a chain's pass over a frame the size of the CPU's cache from cold memory)."""
        if self._on is device:
            return self
        if self._base.device == device:
            object.__setattr__(self, "_on", device)
            return self
        image = self.replace()
        # asynchronous only towards a GPU: a GPU-to-host copy that does not wait hands back a pinned tensor
        # the copy may still be writing, and the cache's host tier would hold pinned memory
        non_blocking = device.type != "cpu"
        object.__setattr__(image, "_base", self._base.to(device, non_blocking=non_blocking))
        object.__setattr__(image, "_storage", None)
        object.__setattr__(image, "_on", device)
        object.__setattr__(image, "_patches", tuple((w, p.to(device, non_blocking=non_blocking))
                                                    for w, p in self._patches))
        return image

    def channel(self, name: str) -> torch.Tensor:
        """One plane, (H, W)."""
        return self.tensor[self.channels.index(name)]

    def rgb(self) -> torch.Tensor:
        """The colour planes, (3, H, W); a single-plane image is repeated."""
        if self.channels[:3] == ("R", "G", "B"):
            return self.tensor[:3]
        return self.tensor[:1].expand(3, -1, -1)

    def alpha(self) -> torch.Tensor | None:
        """The alpha plane (1, H, W), or None."""
        if "A" in self.channels:
            i = self.channels.index("A")
            return self.tensor[i : i + 1]
        return None


# is_unshared runs after every node of a chain, from cold memory: looked up once here, not in torch's and
# torch._C's large module dicts each time (4 of its 11 us after a pass over a 1080p frame)
_storage_use_count = torch._C._storage_Use_Count


def is_unshared(image: Image, image_refs: int) -> bool:
    """Whether writing into ``image.tensor`` can change nothing anyone else sees: the caller holds
    ``image_refs`` references to ``image`` and there are no others, the Image has no pasted windows, its tensor
    object is referenced by this Image alone, no other tensor (a view, a numpy array, autograd) shares its
    memory, no one else holds its storage's Python object (``t.untyped_storage()``, from which a tensor reading
    that memory can be made at any time), torch allocated that memory (not numpy's or a file's: ``from_numpy``
    memory is not resizable), and autograd and inference mode allow writing into it. Whether the memory is
    torch's and whether the tensor is an inference tensor are read once per Image (they do not change for a
    tensor; a tensor given another's memory by ``set_`` after its Image was checked is not seen).

    Args:
        image: an Image the caller holds.
        image_refs: how many references to ``image`` the caller's frames hold.
    """
    # getrefcount counts its own argument and this function's parameter
    if getrefcount(image) > image_refs + 2 or image._patches:
        return False
    tensor = image._base
    # the Image's slot, this local and getrefcount's argument
    if getrefcount(tensor) > 3 or tensor.requires_grad:
        return False
    # What cannot change for the Image's tensor is read once and kept with its storage's Python object: a frame
    # written in place goes down a chain as the same Image, checked again by every node, each time from cold
    # memory after a pass over the frame (creating the storage object and reading its flags cost more than all
    # the rest). Keeping that object adds one to the storage's count, as the local it replaces did.
    kept = image._storage
    if kept is None:
        storage = tensor.untyped_storage()
        kept = (storage, storage._cdata, storage.resizable(), tensor.is_inference())
        object.__setattr__(image, "_storage", kept)
    storage, handle, resizable, inference = kept
    if not resizable or (inference and not torch.is_inference_mode_enabled()):
        return False
    # torch gives one Python object per storage (``t.untyped_storage() is t.untyped_storage()``): ``kept``, this
    # local, getrefcount's argument and the one torch keeps while the storage lives; one more is someone's
    if getrefcount(storage) > 4:
        return False
    # the tensor and ``storage``'s own Python object
    return _storage_use_count(handle) == 2


WARNING_PREFIX = "doublure/warning/"  # metadata key of a node's warning: WARNING_PREFIX + node name


def with_warning(image: Image, node: str, message: str) -> Image:
    """``image`` carrying ``node``'s warning down the pipe in its metadata (what a node that could not do its
    work passes on, so that the viewer shows why and marks the node, and a render's files record it)."""
    return image.replace(metadata={**image.metadata, WARNING_PREFIX + node: message})


def warnings_of(image: Image) -> dict[str, str]:
    """Node name -> warning, for the warnings ``image`` carries (:func:`with_warning`)."""
    return {key[len(WARNING_PREFIX):]: value for key, value in image.metadata.items()
            if key.startswith(WARNING_PREFIX) and isinstance(value, str)}


def mask_image(mask: torch.Tensor, **kwargs: Any) -> Image:
    """Wrap a (1, H, W) or (H, W) tensor in [0, 1] as a Mask-port Image."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    return Image(mask, channels=("A",), **kwargs)
