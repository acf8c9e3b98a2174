"""Engine cache, sidecars, profiles and the compatibility rules; real builds where TensorRT and a GPU are present.

The file-integrity tests write arbitrary bytes as the "plan": they test fastdenoise's sidecar and checksum layer,
which never looks inside a plan, and say nothing about TensorRT itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from fastdenoise.engines.build import (
    BuildConfig,
    EngineError,
    Profile,
    Target,
    build_engine,
    check_compatible,
    engine_key,
    engine_path,
    list_engines,
    onnx_precision,
    sidecar_path,
    verify_engine,
    write_engine,
)

from .conftest import has_tensorrt
from .test_cascade_export import camvid_stand_in, lite_stand_in

H100 = Target("NVIDIA H100 80GB HBM3", "9.0", "10.13.0.35")
L4 = Target("NVIDIA L4", "8.9", "10.13.0.35")
T4 = Target("Tesla T4", "7.5", "10.13.0.35")


def fake_engine(cache: Path, target: Target, *, precision: str = "fp16", cfg: BuildConfig | None = None) -> Path:
    key = engine_key(target, "ab" * 32, precision, cfg or BuildConfig())
    path = engine_path(cache, key)
    write_engine(path, os.urandom(4096), key)
    return path


def test_profile_parses_prints_and_checks_its_order() -> None:
    profile = Profile.parse("1x3x64x64:4x3x512x512:8x3x1024x1024")
    assert profile.min == (1, 3, 64, 64) and profile.max == (8, 3, 1024, 1024)
    assert Profile.parse(profile.text) == profile
    assert profile.contains((8, 3, 1024, 77)) and not profile.contains((9, 3, 64, 64))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile.parse("1x3x64x64:4x3x32x512:8x3x1024x1024")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        Profile((1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 64, 64))
    with pytest.raises(ValueError, match="min:opt:max"):
        Profile.parse("4x3x512x512")


def test_tile_profile_covers_what_the_tiler_sends() -> None:
    from fastdenoise.pipeline.tiling import tile_spans

    profile = Profile.for_tiles(tile=256, batch=4)
    for length in (1, 255, 256, 259, 260, 1000, 1001, 1003):
        for start, end in tile_spans(length, 256, 32):
            assert profile.contains((4, 3, end - start, 256)), (length, start, end)


def test_build_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="hardware_compatibility"):
        BuildConfig(hardware_compatibility="turing")
    with pytest.raises(ValueError, match="optimization_level"):
        BuildConfig(optimization_level=7)
    with pytest.raises(ValueError, match="workspace_mib"):
        BuildConfig(workspace_mib=0)


def test_engine_file_name_depends_on_every_key_field(tmp_path: Path) -> None:
    cfg = BuildConfig()
    base = engine_path(tmp_path, engine_key(H100, "ab" * 32, "fp16", cfg))
    assert base.name.startswith("nvidia-h100-80gb-hbm3_sm90_trt10.13.0.35_fp16_")
    assert base == engine_path(tmp_path, engine_key(H100, "ab" * 32, "fp16", BuildConfig()))
    variants = [
        engine_key(L4, "ab" * 32, "fp16", cfg),
        engine_key(Target(H100.gpu, H100.compute_capability, "10.14.1.48"), "ab" * 32, "fp16", cfg),
        engine_key(H100, "cd" * 32, "fp16", cfg),
        engine_key(H100, "ab" * 32, "bf16", cfg),
        engine_key(H100, "ab" * 32, "fp16", BuildConfig(profile=Profile.for_tiles(512, 4))),
        engine_key(H100, "ab" * 32, "fp16", BuildConfig(hardware_compatibility="ampere_plus")),
    ]
    names = {engine_path(tmp_path, key).name for key in variants}
    assert len(names) == len(variants) and base.name not in names


def test_engine_for_another_gpu_or_tensorrt_version_is_refused() -> None:
    meta = engine_key(H100, "ab" * 32, "fp16", BuildConfig())
    check_compatible(meta, H100)
    with pytest.raises(EngineError, match=r"built for NVIDIA H100 80GB HBM3 \(sm9.0\), this is NVIDIA L4 \(sm8.9\)"):
        check_compatible(meta, L4)
    with pytest.raises(EngineError, match="built with TensorRT 10.13.0.35, this is TensorRT 10.14.1.48"):
        check_compatible(meta, Target(H100.gpu, "9.0", "10.14.1.48"))
    same_cc = Target("NVIDIA H100 PCIe", "9.0", H100.tensorrt)
    with pytest.raises(EngineError, match="rebuild it here"):
        check_compatible(meta, same_cc)


def test_hardware_and_version_compatible_engines_travel_as_far_as_promised() -> None:
    ampere = engine_key(L4, "ab" * 32, "fp16", BuildConfig(hardware_compatibility="ampere_plus"))
    check_compatible(ampere, H100)
    with pytest.raises(EngineError, match="Ampere and newer"):
        check_compatible(ampere, T4)
    same_cc = engine_key(H100, "ab" * 32, "fp16", BuildConfig(hardware_compatibility="same_compute_capability"))
    check_compatible(same_cc, Target("NVIDIA H100 PCIe", "9.0", H100.tensorrt))
    with pytest.raises(EngineError, match="compute capability 9.0"):
        check_compatible(same_cc, L4)
    versioned = engine_key(H100, "ab" * 32, "fp16", BuildConfig(version_compatible=True))
    check_compatible(versioned, Target(H100.gpu, "9.0", "10.14.1.48"))
    for other in ("10.12.0.36", "11.0.0.1"):
        with pytest.raises(EngineError, match="version-compatible"):
            check_compatible(versioned, Target(H100.gpu, "9.0", other))


def test_corrupt_engine_or_missing_sidecar_fails_clearly(tmp_path: Path) -> None:
    path = fake_engine(tmp_path, H100)
    assert verify_engine(path, H100)["precision"] == "fp16"
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(EngineError, match="corrupt engine"):
        verify_engine(path, H100)
    sidecar_path(path).unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        verify_engine(path)
    with pytest.raises(EngineError, match="no such engine"):
        verify_engine(tmp_path / "missing.engine")


def test_sidecar_of_another_format_is_refused(tmp_path: Path) -> None:
    path = fake_engine(tmp_path, H100)
    sidecar_path(path).write_text(json.dumps({"gpu": "x"}))
    with pytest.raises(EngineError, match="not a fastdenoise-trt-engine-v1 sidecar"):
        verify_engine(path)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable sidecar"):
        verify_engine(path)


def test_list_engines_reports_each_file_and_its_state(tmp_path: Path) -> None:
    good = fake_engine(tmp_path, H100)
    corrupt = fake_engine(tmp_path, L4, precision="fp32")
    corrupt.write_bytes(corrupt.read_bytes()[:-1])
    orphan = tmp_path / "orphan.engine"
    orphan.write_bytes(b"plan")
    status = {info.path: info.status for info in list_engines(tmp_path)}
    assert status == {good: "ok", corrupt: "corrupt", orphan: "no sidecar"}
    lines = [info.describe() for info in list_engines(tmp_path)]
    assert any("NVIDIA H100 80GB HBM3 sm9.0" in line and "fp16" in line for line in lines)
    assert list_engines(tmp_path / "empty") == []


def test_precision_comes_from_metadata_or_initializers(tmp_path: Path) -> None:
    for data_type, name in ((TensorProto.FLOAT16, "fp16"), (TensorProto.BFLOAT16, "bf16"), (TensorProto.FLOAT, "fp32")):
        weight = helper.make_tensor("w", data_type, [1], [1.0])
        graph = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["y"])],
            "g",
            [],
            [helper.make_tensor_value_info("y", data_type, [1])],
            [weight],
        )
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph), str(path))
        assert onnx_precision(path) == name


@pytest.mark.skipif(has_tensorrt(), reason="checks the message shown where TensorRT is missing")
def test_building_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "d.onnx").write_bytes(b"any ONNX file")
    with pytest.raises(ImportError, match="pip install tensorrt"):
        build_engine(tmp_path / "d.onnx", cache_dir=tmp_path)


@pytest.mark.gpu
def test_build_caches_the_engine_and_refuses_a_foreign_one(
    tensorrt_gpu: None, denoiser_onnx: Path, tmp_path: Path
) -> None:
    import time

    from fastdenoise.engines.build import current_target, timing_cache_path

    cfg = BuildConfig(profile=Profile.parse("1x3x8x8:2x3x64x64:2x3x96x96"), workspace_mib=1024)
    target = current_target()
    path = build_engine(denoiser_onnx, cfg, cache_dir=tmp_path)
    meta = verify_engine(path, target)
    assert (meta["gpu"], meta["compute_capability"], meta["tensorrt"]) == (
        target.gpu,
        target.compute_capability,
        target.tensorrt,
    )
    assert meta["precision"] == "fp32" and meta["profile"] == cfg.profile.text
    assert timing_cache_path(tmp_path, target).stat().st_size > 0
    start = time.perf_counter()
    assert build_engine(denoiser_onnx, cfg, cache_dir=tmp_path) == path  # cache hit
    assert time.perf_counter() - start < 5
    foreign = {**meta, "gpu": "Some Other GPU"}
    sidecar_path(path).write_text(json.dumps(foreign))
    with pytest.raises(EngineError, match="Some Other GPU"):
        verify_engine(path, target)


@pytest.mark.gpu
@pytest.mark.parametrize("make_head", [lite_stand_in, camvid_stand_in], ids=["efficientnet-lite", "espnetv2-camvid"])
def test_cascade_engine_builds_from_the_exported_onnx_and_matches_onnxruntime(
    tensorrt_gpu: None, denoiser, make_head, tmp_path: Path
) -> None:
    """The file `export-onnx --head` writes is what build-engine builds; its engine gives onnxruntime's logits."""
    import tensorrt as trt
    import torch

    from fastdenoise.engines.build import file_sha256
    from fastdenoise.engines.export import INPUT, OUTPUT, export_cascade, onnx_session

    onnx_path = export_cascade(denoiser, make_head(), tmp_path / "cascade.onnx")
    cfg = BuildConfig(profile=Profile.parse("1x3x16x16:2x3x48x64:2x3x96x96"), workspace_mib=1024)
    path = build_engine(onnx_path, cfg, cache_dir=tmp_path / "engines")
    meta = verify_engine(path)
    assert meta["kind"] == "cascade" and meta["onnx_sha256"] == file_sha256(onnx_path)
    x = torch.rand(2, 3, 45, 62)
    (expected,) = onnx_session(onnx_path).run([OUTPUT], {INPUT: x.numpy()})
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    assert context.set_input_shape(INPUT, tuple(x.shape))
    got = torch.empty(tuple(context.get_tensor_shape(OUTPUT)), device="cuda")
    image = x.cuda().contiguous()
    context.set_tensor_address(INPUT, image.data_ptr())
    context.set_tensor_address(OUTPUT, got.data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    expected_t = torch.from_numpy(expected)
    assert got.shape == expected_t.shape
    assert float((got.cpu() - expected_t).abs().max()) / max(1.0, float(expected_t.abs().max())) < 2e-3  # TF32 convs
