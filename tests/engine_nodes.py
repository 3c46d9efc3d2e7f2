"""Small node types for engine tests: a constant generator, gains (one working in place), a slow node and a
counting sum.

Registered once, under names no library node uses.
"""
import threading
import time

import torch

from doublure.engine import Image, Node, Port, knobs as K, node_types, register_node


class TestConstant(Node):
    """A flat colour, (3, height, width)."""

    type_name = "TestConstant"
    inputs = ()
    knob_specs = (K.Color("color", (0.1, 0.2, 0.3)), K.Int("width", 64, min=1), K.Int("height", 32, min=1))

    def compute(self, ctx, inputs):
        color = torch.tensor(self.value("color", ctx.frame), device=ctx.device)
        h, w = self.value("height", ctx.frame), self.value("width", ctx.frame)
        return Image(color.view(3, 1, 1).expand(3, h, w).contiguous())


class TestFrameRamp(Node):
    """A constant whose value is the frame number: it reads the frame, so it hashes it."""

    type_name = "TestFrameRamp"
    inputs = ()
    knob_specs = (K.Int("size", 8, min=1),)

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        n = self.value("size", ctx.frame)
        return Image(torch.full((3, n, n), float(ctx.frame), device=ctx.device))


class TestGain(Node):
    type_name = "TestGain"
    knob_specs = (K.Float("gain", 1.0, min=-100, max=100), K.Float("mix", 1.0, min=0, max=1))

    def pass_through(self, ctx):
        if self.value("mix", ctx.frame) == 0.0:
            return 0
        return super().pass_through(ctx)

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        gain, mix = self.value("gain", ctx.frame), self.value("mix", ctx.frame)
        return image.replace(tensor=image.tensor * (1 - mix + mix * gain))


class TestSlow(Node):
    """Sleeps in small steps, checking for cancellation; counts how often it ran."""

    type_name = "TestSlow"
    knob_specs = (K.Float("seconds", 0.5, min=0),)
    runs = 0
    lock = threading.Lock()

    def compute(self, ctx, inputs):
        with TestSlow.lock:
            TestSlow.runs += 1
        end = time.perf_counter() + self.value("seconds", ctx.frame)
        while time.perf_counter() < end:
            ctx.check_cancelled()
            time.sleep(0.005)
        return inputs.get(0)


class TestMaskFromImage(Node):
    type_name = "TestMaskFromImage"
    output_type = "Mask"

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return Image(image.tensor[:1].clamp(0, 1), channels=("A",))


class TestMasked(Node):
    type_name = "TestMasked"
    inputs = (Port("source"), Port("mask", "Mask", optional=True))

    def compute(self, ctx, inputs):
        image, mask = inputs.get(0), inputs.get(1)
        return image if mask is None else image.replace(tensor=image.tensor * mask.tensor)


class TestTemporalMean(Node):
    """The mean of its input over frame-window..frame+window: reads other frames, so hashes them."""

    type_name = "TestTemporalMean"
    knob_specs = (K.Int("window", 1, min=0, max=10),)

    def hash(self, ctx, h):
        super().hash(ctx, h)
        w = self.value("window", ctx.frame)
        for f in range(ctx.frame - w, ctx.frame + w + 1):
            h.update(self.input_hash(0, ctx.at(f)))

    def compute(self, ctx, inputs):
        w = self.value("window", ctx.frame)
        frames = [inputs.get(0, frame=f).tensor for f in range(ctx.frame - w, ctx.frame + w + 1)]
        return inputs.get(0).replace(tensor=torch.stack(frames).mean(0))


def _offset_knob_was_amount(entry):
    """TestOffset version 1 saved its knob as ``amount``."""
    knobs = dict(entry.get("knobs", {}))
    if "amount" in knobs:
        knobs["offset"] = knobs.pop("amount")
    return {**entry, "knobs": knobs}


class TestOffset(Node):
    """Adds ``offset``. Version 1 named the knob ``amount`` (an upgrade renames it); version 2 changed compute
    only (no upgrade)."""

    type_name = "TestOffset"
    version = 3
    knob_specs = (K.Float("offset", 0.0),)
    upgrades = {1: _offset_knob_was_amount}

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return image.replace(tensor=image.tensor + self.value("offset", ctx.frame))


class TestInPlaceGain(Node):
    """A gain that takes its input (``Inputs.take``): in place when the engine hands the frame over. Records
    each compute's choice in ``wrote_in_place`` (node name, frame, True when in place)."""

    type_name = "TestInPlaceGain"
    knob_specs = (K.Float("gain", 2.0, min=-100, max=100),)
    wrote_in_place: list[tuple[str, int, bool]] = []

    def compute(self, ctx, inputs):
        image, writable = inputs.take(0)
        gain = self.value("gain", ctx.frame)
        TestInPlaceGain.wrote_in_place.append((self.name, ctx.frame, writable))
        return image.replace(tensor=image.tensor.mul_(gain) if writable else image.tensor * gain)


for _cls in (TestConstant, TestFrameRamp, TestGain, TestSlow, TestMaskFromImage, TestMasked, TestTemporalMean,
             TestOffset, TestInPlaceGain):
    if _cls.type_name not in node_types():
        register_node(_cls)
