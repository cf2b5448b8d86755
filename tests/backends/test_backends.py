"""The backends: each shipped profile's facts, the register budget the default schedules draw from
them, the one toolchain (export's and tuning's), and target resolution for tensors on a device."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tvmconv.backends import base, blocking
from tvmconv.backends.cuda import CUDABackend
from tvmconv.backends.llvm import LLVMBackend
from tvmconv.backends.target import make, resolve
from tvmconv.backends.toolchain import Toolchain, export_to_temp

CPU_FACTS = {  # profile: (vector bits, vector registers)
    "x86-avx512": (512, 32),
    "x86-avx2": (256, 16),
    "arm64-linux": (128, 32),
    "android-arm64": (128, 32),
}


@pytest.mark.parametrize("name", sorted(CPU_FACTS))
def test_cpu_profiles_carry_their_facts(name):
    tgt = resolve(name)
    bits, regs = CPU_FACTS[name]
    assert (tgt.facts.vector_bits, tgt.facts.vector_registers) == (bits, regs)
    assert tgt.vector_bits == bits and tgt.lanes("float32") == bits // 32
    assert tgt.facts.l1d_bytes >= 32768 and tgt.facts.l2_bytes >= 262144
    assert isinstance(tgt.backend, LLVMBackend) and tgt.backend.device_type == "cpu"


@pytest.mark.parametrize("name,sms", [("cuda-sm80", 108), ("cuda-sm90", 132)])
def test_cuda_profiles_carry_their_facts(name, sms):
    tgt = resolve(name)
    assert tgt.facts.multiprocessors == sms and tgt.facts.registers_per_thread == 255
    assert tgt.facts.vector_registers == 0 and tgt.facts.l2_bytes > 32 * 2 ** 20
    assert isinstance(tgt.backend, CUDABackend) and tgt.backend.device_type == "cuda"
    assert tgt.backend.cores == sms


def test_a_custom_target_gets_the_facts_of_its_isa():
    assert make({"kind": "llvm", "mattr": ["+avx2"]}).facts.vector_registers == 16
    assert make({"kind": "llvm", "mattr": ["+avx512f"]}).facts.vector_registers == 32
    assert make({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}).facts.vector_registers == 32
    # a profile's facts override the ISA's field by field
    f = make({"kind": "llvm", "mattr": ["+avx2"]}, facts={"l2_bytes": 2 ** 21}).facts
    assert (f.vector_bits, f.vector_registers, f.l2_bytes) == (256, 16, 2 ** 21)


def _sysfs(root, *caches):
    for i, (level, kind, size) in enumerate(caches):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(text + "\n")
    return root


def test_the_cpu_cache_sizes_come_from_sysfs(tmp_path):
    from tvmconv.backends.target import cpu_cache_facts

    ice_lake = _sysfs(tmp_path / "icx", ("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "1280K"),
                      ("3", "Unified", "54M"))
    assert cpu_cache_facts(ice_lake) == {"l1d_bytes": 48 * 1024, "l2_bytes": 1280 * 1024}
    odd = _sysfs(tmp_path / "odd", ("1", "Data", "lots"), ("2", "Unified", "1M"))
    assert cpu_cache_facts(odd) == {"l2_bytes": 2 ** 20}  # what cannot be read is the ISA's
    assert cpu_cache_facts(tmp_path / "absent") == {}


def test_a_target_this_cpu_runs_takes_its_cache_sizes(monkeypatch):
    """Between the ISA's sizes and a profile's own: the shipped profiles name an ISA, and a wvec
    task stages half of the L1d of the CPU that runs it (48 KiB on an Ice Lake: 24 KiB of rows)."""
    import tvmconv.functional as TF
    from tvmconv.backends import target as T

    monkeypatch.setattr(T, "cpu_cache_facts", lambda: {"l1d_bytes": 48 * 1024, "l2_bytes": 1280 * 1024})
    here = make({"kind": "llvm", "mattr": ["+sse2"]})  # (vectors every x86 and aarch64 CPU runs)
    assert here.runs_here and (here.facts.l1d_bytes, here.facts.l2_bytes) == (48 * 1024, 1280 * 1024)
    cross = make({"kind": "llvm", "mtriple": "riscv64-linux-gnu"})
    assert not cross.runs_here and cross.facts.l1d_bytes == 32768  # the ISA's
    own = make({"kind": "llvm", "mattr": ["+sse2"]}, facts={"l1d_bytes": 65536})
    assert own.facts.l1d_bytes == 65536 and own.facts.l2_bytes == 1280 * 1024  # a profile's own facts win
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 64, 56, 56), torch.randn(64, 1, 3, 3), padding=1, groups=64)
    plan = here.backend.default_plan(spec)
    assert plan.kind == "wvec" and plan.rows == blocking.wvec_rows(spec, plan.owi, 24 * 1024)


def test_a_profile_with_unknown_facts_is_refused(tmp_path, monkeypatch):
    (tmp_path / "odd.json").write_text('{"target": {"kind": "llvm"}, "facts": {"vector_regs": 32}}')
    from tvmconv.backends import target as T

    with pytest.raises(ValueError, match="facts takes non-negative integers"):
        T._profile_from_file(tmp_path / "odd.json")


# The budget comes from the register file (facts.vector_registers) less the broadcast input and two
# weight vectors (and one register a 32 kept free), each vector counted as the registers its
# arithmetic takes. AVX2 float32 (13) and AVX-512 float32 (28) are the numbers of the lane-keyed rule
# before the facts, under which the shipped records were tuned: unchanged. What changed, and why:
# NEON's 32 registers were budgeted as 16 (13) -- now 28, as AVX-512's 32; float64 on AVX-512 (8
# lanes) likewise 13 -> 28; float16 without half-precision arithmetic is computed by LLVM in float32,
# two registers a vector (AVX2: 16 halves -> 2 ymm of floats), so AVX2 float16 drops from 28 vectors
# (56 registers of a 16-register file) to (16 - 6) // 2 = 5, AVX-512's from 28 to (32 - 7) // 2 = 12.
@pytest.mark.parametrize("name,dtype,budget", [
    ("x86-avx512", "float32", 28), ("x86-avx512", "float16", 12), ("x86-avx512", "float64", 28),
    ("x86-avx2", "float32", 13), ("x86-avx2", "float64", 13), ("x86-avx2", "float16", 5),
    ("arm64-linux", "float32", 28), ("arm64-linux", "float16", 12), ("arm64-linux", "float64", 28),
    ("android-arm64", "float32", 28),
])
def test_the_register_budget_comes_from_the_register_file(name, dtype, budget):
    be = resolve(name).backend
    assert be.tile_registers(dtype) == budget
    widen = be.registers_per_vector(dtype)
    assert widen == (2 if dtype == "float16" else 1)
    # the tile, the broadcast input and two weight vectors fit the file (in registers)
    assert (budget + 3) * widen <= be.facts.vector_registers


def test_the_budget_comes_from_the_registers():
    assert blocking._tile_registers(16, 32) == 28 and blocking._tile_registers(8, 16) == 13
    assert blocking._tile_registers(4, 32) == 28  # NEON float32: the file, not the lanes
    assert blocking._tile_registers(32, 64) == 59  # a larger file counts
    assert blocking._tile_registers(16, 16, widen=2) == 5
    assert blocking._tile_registers(16) == 28 and blocking._tile_registers(8) == 13  # no facts: the ISA's file


def test_one_vector_of_channels_frees_a_weight_register():
    assert blocking._tile_registers(8, 16, weights=1) == 14 and blocking._tile_registers(16, 32, weights=1) == 29


def _conv(c_in, c_out, hw, k=1):
    from tvmconv.variants import ConvSpec

    return ConvSpec(c_in=c_in, in_size=(hw, hw), c_out=c_out, kernel=(k, k), stride=(1, 1),
                    padding=((k // 2, k // 2),) * 2, dilation=(1, 1))


@pytest.mark.parametrize("spec,lanes,regs,vb,owi", [
    (_conv(144, 24, 28), 8, 16, 8, 14),  # two vectors would pad 24 channels to 32
    (_conv(64, 128, 28), 8, 16, 8, 14),  # pointwise: 14 pixels of one vector beat 2 x 6
    (_conv(64, 64, 56, 3), 8, 16, 16, 6),  # 3x3: two vectors halve the broadcasts per FMA
    (_conv(160, 960, 7), 8, 16, 24, 4),  # pointwise, a row of most of one vector: three vectors by 4 pixels
    (_conv(160, 16, 7), 8, 16, 16, 4),  # (fewer channels than three vectors)
    (_conv(64, 128, 56), 16, 32, 32, 14),  # AVX-512: 28 pixels of one vector are no more than 2 x 14
    (_conv(40, 80, 28), 16, 32, 16, 28),  # AVX-512: two vectors would pad 80 channels to 96
])
def test_the_channel_block_is_one_vector_where_two_pad_or_hold_fewer_pixels(spec, lanes, regs, vb, owi):
    # (the ocvec tile of these layers; pointwise ones with a block of 5 to 8 channels take the pixel tile instead)
    got = blocking._channel_block(spec.c_out, spec.out_size[-1], lanes, blocking._tile_registers(lanes, regs), 1,
                                  pointwise=spec.kernel == (1, 1))
    assert got == (vb, owi)
    if spec.kernel != (1, 1):
        assert blocking.plan_for(spec, lanes, regs) == blocking.Plan("ocvec", vb=vb, owi=owi)


@pytest.mark.parametrize("spec,lanes,regs,vb,owi,rows", [
    (_conv(16, 96, 112), 8, 16, 6, 16, 1),  # 6 channels x 2 vectors of a row, 2 input vectors: 15 of 16
    (_conv(24, 144, 56), 8, 16, 6, 8, 2),  # 56 = 7 vectors: one vector of two rows
    (_conv(64, 64, 56), 8, 16, 4, 8, 2),  # (6 does not divide 64)
    (_conv(16, 96, 112), 16, 32, 8, 16, 2),  # AVX-512: 112 = 7 vectors of 16
    (_conv(96, 576, 14), 8, 16, 6, 16, 1),  # rows of 14 widened to two whole vectors
    (_conv(144, 24, 28), 8, 16, 6, 16, 1),  # 28 = 3.5 vectors: two tiles of 16 a row
    (_conv(64, 64, 56), 16, 32, 8, 32, 1),  # AVX-512: 56 = 3.5 vectors of 16
])
def test_a_pointwise_layer_with_whole_vectors_in_its_rows_is_tiled_along_its_pixels(spec, lanes, regs, vb, owi, rows):
    plan = blocking.plan_for(spec, lanes, regs)
    assert (plan.kind, plan.vb, plan.owi, plan.rows) == ("wvec", vb, owi, rows)
    tile, inputs = vb * rows * owi // lanes, rows * owi // lanes  # beside one broadcast weight, in the file
    assert tile + inputs + 1 + regs // 32 <= regs


@pytest.mark.parametrize("spec,outer", [
    (_conv(112, 672, 14), True),  # 672 x 112 weights against 112 x 196 input values
    (_conv(96, 576, 14), True),  # 576 channels against 196 pixels
    (_conv(576, 96, 14), False),
    (_conv(16, 96, 112), False),  # the input, not the weights, is what a thread should read once
])
def test_a_pixel_tile_walks_channel_blocks_outermost_where_the_weights_outweigh_the_input(spec, outer):
    plan = blocking.plan_for(spec, 8, 16)
    assert plan.vb > 1 and plan.channels_outer == outer


@pytest.mark.parametrize("n,c_in,c_out,hw", [(1, 24, 64, 7), (2, 16, 120, 7), (1, 32, 240, 14), (3, 8, 160, 7)])
def test_pixel_tiles_with_channel_blocks_outermost_give_torchs_answer(n, c_in, c_out, hw):
    """Batches too (the batch loop moves inside the channel blocks); 14 wide rows: the output row
    stored as a vector and one of 6 lanes; 7 wide rows (``ocvec`` of three vectors, the channels
    padded to whole blocks: 64 and 160 are not multiples of 24)."""
    import tvmconv.functional as TF

    g = torch.Generator().manual_seed(c_out)
    x, w, b = torch.randn(n, c_in, hw, hw, generator=g), torch.randn(c_out, c_in, 1, 1, generator=g), torch.randn(c_out)
    torch.testing.assert_close(TF.conv2d(x, w, b), torch.nn.functional.conv2d(x, w, b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec,lanes,regs,plan", [
    (_conv(960, 160, 7), 8, 16, ("ocvec", 24, 4)),  # AVX2: 7 of 8 lanes
    (_conv(160, 960, 7), 8, 32, ("ocvec", 24, 7)),  # (a file of 32 registers: the whole row)
    (_conv(960, 160, 7), 16, 32, ("ocvec", 32, 7)),  # AVX-512: 7 of 16 lanes, as before the rule
])
def test_pointwise_rows_of_most_of_one_vector_keep_channels_in_three_vectors(spec, lanes, regs, plan):
    got = blocking.plan_for(spec, lanes, regs)
    assert (got.kind, got.vb, got.owi) == plan


@pytest.mark.parametrize("spec,lanes", [(_conv(64, 64, 56, 3), 8), (_conv(64, 64, 28), 8), (_conv(960, 160, 7), 16),
                                        (_conv(16, 7, 56), 8), (_conv(384, 64, 14), 8)])
def test_other_layers_keep_channels_in_the_vector(spec, lanes):
    # a 3x3 layer, widened rows where only 4 channels would fit the tile beside their input vectors (28 and 14
    # wide on AVX2), 7 wide on AVX-512 (9 of 16 lanes padding), 7 output channels (no block of 4 to 8)
    assert blocking.plan_for(spec, lanes, 2 * lanes).kind == "ocvec" or spec.c_out < lanes


def _depthwise(c, hw, k, stride):
    from tvmconv.variants import ConvSpec

    return ConvSpec(c_in=c, in_size=(hw, hw), c_out=c, kernel=(k, k), stride=(stride, stride),
                    padding=((k // 2, k // 2),) * 2, dilation=(1, 1), groups=c)


@pytest.mark.parametrize("spec,phases", [
    (_depthwise(96, 112, 3, 2), True),  # a 56-wide output row: 7 vectors
    (_depthwise(144, 56, 5, 2), True),
    (_depthwise(672, 14, 5, 2), True),  # 7 wide, but 5 taps a row
    (_depthwise(576, 14, 3, 2), False),  # 7 wide, 3 taps: the split pass costs more than it saves
    (_depthwise(144, 56, 3, 1), False),  # no stride: nothing to split
])
def test_a_strided_layer_stages_its_rows_split_by_phase(spec, phases):
    plan = blocking.plan_for(spec, 8, 16)
    assert plan.kind == "wvec" and plan.phases == phases


@pytest.mark.parametrize("dims,stride,dilation,k", [(2, 2, 1, 3), (2, 2, 1, 5), (2, 3, 2, 3), (1, 2, 1, 5), (3, 2, 1, 3)])
def test_phase_split_rows_give_the_strided_convolution(dims, stride, dilation, k):
    """Depthwise and grouped layers of width stride 2 and 3 (with dilation: taps of both phases)
    against torch, 1-D to 3-D, rows long enough that the default plan splits them on AVX-512 too."""
    import tvmconv.functional as TF

    F = torch.nn.functional
    conv, ref = {1: (TF.conv1d, F.conv1d), 2: (TF.conv2d, F.conv2d), 3: (TF.conv3d, F.conv3d)}[dims]
    g = torch.Generator().manual_seed(dims * 10 + stride)
    size = {1: (101,), 2: (9, 75), 3: (3, 5, 71)}[dims]
    x = torch.randn(1, 6, *size, generator=g)
    w = torch.randn(6, 2, *(k,) * dims, generator=g)
    b = torch.randn(6, generator=g)
    kw = dict(stride=stride, padding=k // 2, dilation=dilation, groups=3)
    spec = TF.spec_of(conv, x, w, b, **kw)
    assert resolve(None).backend.default_plan(spec).phases
    torch.testing.assert_close(conv(x, w, b, **kw), ref(x, w, b, **kw), atol=1e-4, rtol=1e-4)


def test_a_backend_registered_from_a_test_is_found_by_targets_and_argument_checks():
    """The registry is open (issue 36): a class registered for a kind and device type is the backend
    of that kind's targets and makes tensors on that device acceptable; unregistered, neither."""
    from tvmconv._args import Args
    from tvmconv.backends import registry

    meta = torch.empty(1, 3, 8, 8, device="meta")

    class ToyBackend(base.Backend):
        kind, device_type = "toy", "meta"

    registry.register(ToyBackend)
    # its code is in every kernel's cache key, a plugin's as much as the package's own
    assert ToyBackend.code_hash() == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    assert LLVMBackend.code_hash() not in ("", ToyBackend.code_hash())
    try:
        tgt = make({"kind": "toy"})
        assert isinstance(tgt.backend, ToyBackend) and base.supported(tgt)
        assert base.backend_class("toy") is ToyBackend and "meta" in registry.device_types()
        assert Args("conv2d").tensor(meta, "input", ndim=4) is meta  # a tensor on its device is taken
    finally:
        registry.unregister("toy")
    assert not base.supported(make({"kind": "toy"})) and "meta" not in registry.device_types()
    with pytest.raises(ValueError, match="is on device 'meta'"):
        Args("conv2d").tensor(meta, "input", ndim=4)
    with pytest.raises(ValueError, match="tvmconv has backends for"):
        make({"kind": "toy"}).backend
    with pytest.raises(ValueError, match="^target '.+': tvmconv has backends for"):  # (which profile asked)
        base.backend_for(make({"kind": "toy"}))


def test_native_half_precision_takes_one_register_a_vector():
    assert make({"kind": "llvm", "mattr": ["+avx512f", "+avx512fp16"]}).backend.registers_per_vector("float16") == 1
    assert make({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                 "mattr": ["+neon", "+fullfp16"]}).backend.registers_per_vector("float16") == 1


def test_wvec_rows_stage_half_of_the_l1_cache():
    """The row budget is half of facts.l1d_bytes: 16 KiB on a 32 KiB L1d (the constant it
    replaced, under which the shipped records were tuned), more on a 64 KiB one."""
    import tvmconv.functional as TF

    spec = TF.spec_of(TF.conv2d, torch.randn(1, 64, 56, 56), torch.randn(64, 1, 3, 3), padding=1, groups=64)
    small = blocking.plan_for(spec, 8, 16, l1d_bytes=32768)
    assert small.kind == "wvec" and small.rows == blocking.wvec_rows(spec, small.owi, 16384)
    big = blocking.plan_for(spec, 8, 16, l1d_bytes=4 * 32768)
    assert big.rows >= small.rows and big.rows == blocking.wvec_rows(spec, big.owi, 65536)


def test_default_plans_use_the_backend_facts():
    import tvmconv.functional as TF

    spec = TF.spec_of(TF.conv2d, torch.randn(1, 64, 14, 14), torch.randn(64, 64, 3, 3), padding=1)
    for name in CPU_FACTS:
        tgt = resolve(name)
        assert tgt.backend.default_plan(spec) == blocking.plan_for(spec, tgt.lanes("float32"),
                                                                   tgt.facts.vector_registers,
                                                                   serial_below_s=tgt.backend.serial_below_s())


# -- the toolchain --------------------------------------------------------------------------------
def test_native_and_cross_toolchains():
    native = resolve("x86-avx2").backend.toolchain()
    assert native.kind == "native" and native.tuning_export() is None
    cross = resolve("arm64-linux").backend.toolchain()
    assert (cross.kind, cross.cc, cross.ar) == ("cross", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-ar")
    f = cross.tuning_export()  # MetaSchedule's builder runs it in worker processes: it must pickle
    assert f.func is export_to_temp and f.keywords == {"kind": "cross", "cc": "aarch64-linux-gnu-gcc"}
    assert pickle.loads(pickle.dumps(f)).keywords == f.keywords
    assert resolve("arm64-linux").backend.tuning_export().keywords == f.keywords
    assert resolve("cuda-sm90").backend.toolchain() is None


def test_android_links_with_the_ndk_else_zig(monkeypatch):
    from tvmconv.backends import android

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    be = resolve("android-arm64").backend
    if android.zig() is not None:  # without the NDK, zig (the [android] extra) links
        tools = be.toolchain()
        assert tools.kind == "zig" and tools.cc.split()[1:] == ["cc", "-target", "aarch64-linux-android"]
    monkeypatch.setattr(android, "zig", lambda: None)
    for ask in (be.toolchain, be.tuning_export):  # export's toolchain and tuning's builder
        with pytest.raises(ValueError, match=r"'android-arm64' links for Android: install zig .*TVM_NDK_CC"):
            ask()
    monkeypatch.setenv("TVM_NDK_CC", "/ndk/bin/aarch64-linux-android24-clang++")
    tools = be.toolchain()
    assert (tools.kind, tools.cc, tools.ar) == ("ndk", "/ndk/bin/aarch64-linux-android24-clang++", "/ndk/bin/llvm-ar")
    # no phone here: its programs are checked in the profile's harness, Linux aarch64 under qemu
    assert Toolchain.build_of(resolve("android-arm64")).get("harness") == "arm64-linux"
    assert Toolchain.build_of(resolve("arm64-linux")).get("harness", "") == ""


def test_export_uses_the_backend_toolchain():
    """tools/export.py links with the backend's toolchain and has no toolchain logic of its own."""
    from tvmconv.tools import export

    assert not hasattr(export, "_toolchain") and not hasattr(export, "_export_cpu")
    source = open(export.__file__).read()
    assert "TVM_NDK_CC" not in source and "cross_compiler" not in source


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="needs the aarch64 cross compiler")
def test_tuning_export_links_for_the_target(tmp_path):
    import tvm
    from tvm import te

    a = te.placeholder((8,), name="a")
    b = te.compute((8,), lambda i: a[i] * 2, name="b")
    tgt = resolve("arm64-linux")
    ex = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b])}), target=tgt.tvm())
    path = tgt.backend.tuning_export()(ex)
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert Toolchain.for_target(tgt).kind == "cross"


# -- resolution for tensors on a device -----------------------------------------------------------
def test_targets_for_tensors_on_the_cpu():
    host = resolve("host")
    assert base.target_for_tensors("conv2d", torch.device("cpu"), None) == host
    with pytest.raises(ValueError, match="runs on a CUDA GPU, but the tensors are on the CPU"):
        base.target_for_tensors("conv2d", torch.device("cpu"), "cuda-sm90")
    if host.lanes("float32") != 4:  # an x86 host: an aarch64 profile does not run here
        with pytest.raises(ValueError, match="does not run on this machine's CPU"):
            base.target_for_tensors("conv2d", None, "arm64-linux")


def test_unknown_kinds_have_no_backend():
    tgt = make({"kind": "opencl"})
    assert not base.supported(tgt)
    with pytest.raises(ValueError, match="backends for"):
        base.backend_for(tgt)


def _shipped_float32():
    import json

    from tvmconv import knobs
    from tvmconv.spec import spec_from_dict
    from tvmconv.variants.compute import plan_from_dict

    for path in sorted((knobs.shipped_dir() / "schedules" / "x86-avx2").glob("*.json")):
        d = json.loads(path.read_text())
        spec = spec_from_dict(d["spec"])
        if spec.dtype == "float32":
            yield spec, plan_from_dict(d["plan"])


def test_transferred_plans_keep_their_vectors_and_fit_the_registers():
    """Every shipped AVX2 plan moved to AVX-512: blocks of whole 16-lane vectors, as many vectors a
    block as the record chose (where the group has the channels), a tile within 28 registers."""
    seen = 0
    for spec, plan in _shipped_float32():
        assert blocking.transfer_plan(plan, spec, 8, 8, 16) == plan
        moved = blocking.transfer_plan(plan, spec, 8, 16, 32)
        if plan.kind == moved.kind == "ocvec":
            seen += 1
            assert moved.vb % 16 == 0 and moved.vb // 16 <= plan.vb // 8
            assert moved.owi * (moved.vb // 16) <= 28 and moved.owi <= spec.out_size[-1]
        elif plan.kind == moved.kind == "wvec":
            assert moved.owi % 16 == 0 and moved.owi // 16 == max(1, min(plan.owi // 8, -(-spec.out_size[-1] // 16)))
        assert moved.serial == plan.serial
    assert seen > 50


def test_a_backends_code_is_in_its_kernels_cache_key(monkeypatch):
    from tvmconv.runtime import build
    from tvmconv.variants.conv import conv_spec

    spec = conv_spec("conv2d", 2, torch.zeros(1, 8, 9, 9), torch.zeros(8, 8, 3, 3))[0]
    tgt = resolve("x86-avx2")
    before = build._lib_key(spec, tgt, None)
    monkeypatch.setattr(LLVMBackend, "code_hash", classmethod(lambda cls: "changed"))
    assert build._lib_key(spec, tgt, None) != before
