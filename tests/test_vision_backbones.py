"""Image loading, preprocessing and the image backbones (ResNet, EfficientNet)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from finetuner.errors import ConfigError, DataError
from finetuner.models import describe_models, get_spec
from finetuner.models.backbones import vision
from finetuner.models.images import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, load_image

SMALL = {"pretrained": False, "image_size": 32}
pytestmark = pytest.mark.slow  # full-size networks: run in the plugins environment

# --------------------------------------------------------------------------------------------
# Images


def _rgb_pixels(height: int = 5, width: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def test_load_image_reads_paths_and_file_uris(tmp_path):
    pixels = _rgb_pixels()
    path = tmp_path / "a dir" / "cat.png"
    path.parent.mkdir()
    Image.fromarray(pixels).save(path)
    expected = _chw(pixels)

    for ref in (str(path), path, path.as_uri()):
        image = load_image(ref)
        assert image.dtype == torch.float32
        assert torch.equal(image, expected), ref


def test_load_image_converts_gray_and_rgba_files(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.dstack([_rgb_pixels(3, 4), np.full((3, 4), 7, dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")

    assert torch.equal(load_image(tmp_path / "gray.png"), _chw(np.dstack([gray] * 3)))
    assert torch.equal(load_image(tmp_path / "rgba.png"), _chw(rgba[..., :3]))


def test_load_image_takes_arrays_and_tensors():
    pixels = _rgb_pixels()
    expected = _chw(pixels)
    assert torch.equal(load_image(pixels), expected)  # HWC uint8
    assert torch.equal(load_image(pixels.astype(np.float32) / 255), expected)  # HWC float
    assert torch.equal(load_image(torch.from_numpy(pixels)), expected)  # HWC tensor
    assert torch.equal(load_image(expected.clone()), expected)  # CHW float tensor
    assert torch.equal(load_image(torch.from_numpy(pixels).permute(2, 0, 1)), expected)

    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert torch.equal(load_image(gray), _chw(np.dstack([gray] * 3)))
    rgba = np.dstack([pixels, np.zeros(pixels.shape[:2], dtype=np.uint8)])
    assert torch.equal(load_image(rgba), expected)
    # Where both layouts fit, numpy means HWC and torch means CHW.
    cube = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    assert torch.equal(load_image(cube), _chw(cube))
    assert torch.equal(load_image(torch.from_numpy(cube)), torch.from_numpy(cube).float() / 255)


def test_bad_image_references_are_data_errors_naming_them(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DataError, match=r"image file not found: .*missing\.jpg"):
        load_image(missing)
    with pytest.raises(DataError, match=r"image file not found: .*missing\.jpg"):
        load_image(missing.as_uri())

    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(DataError, match=r"cannot read .*notes\.png as an image"):
        load_image(not_image)

    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path)

    url = "https://example.com/cat.jpg"
    with pytest.raises(DataError, match=r"https://example\.com/cat\.jpg is a remote image.*local"):
        load_image(url)

    with pytest.raises(DataError, match=r"got shape \(2, 3, 5, 5\)"):
        load_image(np.zeros((2, 3, 5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"got shape \(5, 5, 7\)"):
        load_image(np.zeros((5, 5, 7), dtype=np.uint8))
    with pytest.raises(DataError, match=r"values in 0\.\.1.*255"):
        load_image(np.full((4, 4, 3), 200.0))
    with pytest.raises(DataError, match="cannot use a dict as an image"):
        load_image({"uri": "x.png"})


def test_image_preprocessor_resizes_and_normalises(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    refs = [path, np.full((10, 20, 3), 255, dtype=np.uint8), torch.zeros(3, 64, 64)]

    preprocessor = ImagePreprocessor(height=16, width=24)
    batch = preprocessor(refs)
    assert batch.shape == (3, 3, 16, 24)
    assert batch.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    red = (torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1) - mean) / std
    torch.testing.assert_close(batch[0], red.expand(3, 16, 24))
    torch.testing.assert_close(batch[1], ((1 - mean) / std).expand(3, 16, 24))
    torch.testing.assert_close(batch[2], (-mean / std).expand(3, 16, 24))

    raw = ImagePreprocessor(height=16, width=24, normalization=False)(refs)
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    torch.testing.assert_close(raw[1], torch.ones(3, 16, 24))

    tensor_batch = torch.rand(2, 3, 20, 20)
    assert ImagePreprocessor(8, 8)(tensor_batch).shape == (2, 3, 8, 8)
    assert preprocessor.modality == "image"
    assert preprocessor.files() == {}


def test_image_preprocessor_pickles_for_dataloader_workers():
    preprocessor = ImagePreprocessor(height=12, width=10, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    copy = pickle.loads(pickle.dumps(preprocessor))
    images = torch.rand(2, 3, 15, 15)
    assert torch.equal(copy(images), preprocessor(images))


# --------------------------------------------------------------------------------------------
# Backbones

DIMS = {
    "resnet-base": 2048,
    "resnet-large": 2048,
    "efficientnet-base": 1792,
    "efficientnet-large": 2560,
}


def test_image_backbones_are_listed_with_their_output_dims():
    rows = {row["name"]: row for row in describe_models(print_table=False)}
    for name, dim in DIMS.items():
        assert rows[name]["output_dim"] == dim
        assert rows[name]["task"] == "image-to-image"
        spec = get_spec(name)
        assert spec.modality == "image"
    assert rows["resnet-base"]["architecture"] == "ResNet-50"
    assert rows["efficientnet-large"]["architecture"] == "EfficientNet-B7"


def test_listing_models_builds_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("listing the models built a network")

    monkeypatch.setattr(vision.ResNet, "__init__", refuse)
    monkeypatch.setattr(vision.EfficientNet, "__init__", refuse)
    assert {row["name"] for row in describe_models(print_table=False)} >= set(DIMS)


@pytest.mark.parametrize("name", sorted(DIMS))
def test_each_image_backbone_embeds_a_batch(name):
    spec = get_spec(name)
    options = spec.resolve_options(SMALL, None)
    model = spec.build(options).eval()
    batch = spec.preprocessor(options, None, None)([np.zeros((40, 50, 3), np.uint8)] * 2)
    assert batch.shape == (2, 3, 32, 32)
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (2, DIMS[name])
    assert torch.isfinite(out).all()
    assert spec.output_dim(options) == DIMS[name]
    rebuild = spec.for_rebuild({**options, "pretrained": True, "weights": "/x.pth"})
    assert rebuild["pretrained"] is False and rebuild["weights"] is None


def _resnet(**options):
    spec = get_spec("resnet-base")
    return spec.build(spec.resolve_options({**SMALL, **options}, None)).eval()


def test_pooling_options():
    images = torch.rand(2, 3, 32, 32)
    for pooling, reduce in (
        ("max", lambda fmap: fmap.amax(dim=(2, 3))),
        ("gem", lambda fmap: fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)) ** (1 / 3)),
    ):
        model = _resnet(pooling=pooling)
        with torch.no_grad():
            torch.testing.assert_close(
                model(images), reduce(model.body.network.feature_map(images))
            )

    gem = model.body.pooling
    assert isinstance(gem, vision.GeneralizedMeanPooling)
    assert "body.pooling.p" in dict(model.named_parameters())
    assert gem.p.item() == 3.0
    feature_map = torch.rand(2, 5, 3, 3)
    gem(feature_map).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0

    average = vision.make_pooling("avg")
    torch.testing.assert_close(average(feature_map), feature_map.mean(dim=(2, 3)))

    with pytest.raises(ConfigError, match=r"pooling 'mean' is not one of avg, max, GeM"):
        _resnet(pooling="mean")


def test_output_dim_freeze_and_normalize():
    spec = get_spec("resnet-base")
    options = spec.resolve_options(
        {**SMALL, "output_dim": 16, "freeze": True, "normalize": True}, None
    )
    assert spec.output_dim(options) == 16
    model = spec.build(options).eval()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projection.weight", "projection.bias"}
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))

    with pytest.raises(ConfigError, match=r"freeze=True .* add output_dim"):
        spec.resolve_options({"freeze": True}, None)


def test_options_are_checked():
    spec = get_spec("resnet-base")
    with pytest.raises(ConfigError, match=r"no option 'poolng'.*Did you mean 'pooling'"):
        spec.resolve_options({"poolng": "max"}, None)
    with pytest.raises(ConfigError, match="image_size must be an integer of at least 32"):
        spec.resolve_options({"image_size": 8}, None)
    with pytest.raises(ConfigError, match="pretrained must be true or false"):
        spec.resolve_options({"pretrained": "yes"}, None)
    with pytest.raises(ConfigError, match="output_dim must be a positive integer"):
        spec.resolve_options({"output_dim": 0}, None)
    with pytest.raises(ConfigError, match="weights and pretrained=False contradict"):
        spec.resolve_options({"pretrained": False, "weights": "/w.pth"}, None)
    defaults = spec.resolve_options({}, None)
    assert defaults["pretrained"] is True and defaults["image_size"] == 224
    assert get_spec("efficientnet-base").resolve_options({}, None)["image_size"] == 380
    assert get_spec("efficientnet-large").resolve_options({}, None)["image_size"] == 600


# --------------------------------------------------------------------------------------------
# Pretrained weights


@pytest.fixture()
def weight_dirs(tmp_path, monkeypatch):
    """Empty FINETUNER_WEIGHTS_DIR and torch hub cache."""
    weights_dir = tmp_path / "weights"
    torch_home = tmp_path / "torch-home"
    weights_dir.mkdir()
    monkeypatch.setenv("FINETUNER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return weights_dir, torch_home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet50_state(tmp_path_factory):
    """A random ResNet-50 state dict, saved as .pth and .safetensors."""
    torch.manual_seed(3)
    state = vision.resnet50().state_dict()
    folder = tmp_path_factory.mktemp("resnet50-weights")
    torch.save(state, folder / "weights.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "weights.safetensors")
    return state, folder


def _assert_holds(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    held = model.body.network.state_dict()
    assert set(held) == {k for k in state if not k.startswith("fc.")}
    for key, value in held.items():
        assert torch.equal(value, state[key]), key


def test_missing_pretrained_weights_say_where_they_were_looked_for(weight_dirs):
    weights_dir, hub = weight_dirs
    spec = get_spec("resnet-base")
    with pytest.raises(ConfigError) as info:
        spec.build(spec.resolve_options({}, None))
    message = str(info.value)
    assert "pretrained weights of 'resnet-base' are not on this machine" in message
    assert "resnet50-11ad3fa6.pth" in message
    assert str(weights_dir) in message and str(hub) in message
    assert "model_options={'weights': '/path/resnet50-11ad3fa6.pth'}" in message
    assert "model_options={'pretrained': False}" in message

    with pytest.raises(ConfigError, match=r"efficientnet_b7_lukemelas-c5b4e57e\.pth"):
        spec = get_spec("efficientnet-large")
        spec.build(spec.resolve_options({}, None))


def test_pretrained_weights_are_found_in_the_weights_dir_and_hub_cache(weight_dirs, resnet50_state):
    weights_dir, hub = weight_dirs
    state, folder = resnet50_state
    spec = get_spec("resnet-base")
    options = spec.resolve_options({"image_size": 32}, None)

    (weights_dir / "resnet50-11ad3fa6.pth").symlink_to(folder / "weights.pth")
    _assert_holds(spec.build(options), state)

    (weights_dir / "resnet50-11ad3fa6.pth").unlink()
    hub.mkdir(parents=True)
    (hub / "resnet50-11ad3fa6.pth").symlink_to(folder / "weights.pth")
    _assert_holds(spec.build(options), state)


def test_weights_option_loads_pth_and_safetensors(weight_dirs, resnet50_state):
    state, folder = resnet50_state
    spec = get_spec("resnet-base")
    for file in ("weights.safetensors", "weights.pth"):
        options = spec.resolve_options({"weights": str(folder / file), "image_size": 32}, None)
        _assert_holds(spec.build(options), state)


def test_weights_that_do_not_fit_are_config_errors(tmp_path):
    spec = get_spec("resnet-base")

    def build(path: Path) -> None:
        spec.build(spec.resolve_options({"weights": str(path)}, None))

    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "head.weight": torch.zeros(2)}, wrong)
    with pytest.raises(ConfigError) as info:
        build(wrong)
    message = str(info.value)
    assert "do not fit 'resnet-base' (torchvision's resnet50)" in message
    assert "missing keys 'bn1.weight'" in message
    assert "unexpected keys 'head.weight'" in message
    assert "'conv1.weight' (8, 3, 7, 7) (expected (64, 3, 7, 7))" in message

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="holds no state dict"):
        build(tmp_path / "list.pth")
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"cannot read the weights .*garbage\.pth"):
        build(tmp_path / "garbage.pth")
    with pytest.raises(ConfigError, match=r"does not exist: .*absent\.pth"):
        build(tmp_path / "absent.pth")


# --------------------------------------------------------------------------------------------
# Compatibility with torchvision's state dicts (keys and shapes taken from torchvision 0.29.1)

TORCHVISION_KEYS = {
    "resnet50": (
        320,
        "781bb16f43b8f96f",
        {
            "conv1.weight": (64, 3, 7, 7),
            "bn1.running_mean": (64,),
            "layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "layer2.0.conv2.weight": (128, 128, 3, 3),
            "layer3.5.bn3.num_batches_tracked": (),
            "layer4.2.bn3.running_var": (2048,),
            "fc.weight": (1000, 2048),
            "fc.bias": (1000,),
        },
    ),
    "resnet152": (
        932,
        "9e3321003337a848",
        {
            "layer2.7.conv3.weight": (512, 128, 1, 1),
            "layer3.35.bn2.weight": (256,),
            "layer4.0.downsample.1.running_mean": (2048,),
            "fc.weight": (1000, 2048),
        },
    ),
    "efficientnet_b4": (
        706,
        "247b4546c18f3d80",
        {
            "features.0.0.weight": (48, 3, 3, 3),
            "features.1.0.block.0.0.weight": (48, 1, 3, 3),
            "features.1.0.block.1.fc1.weight": (12, 48, 1, 1),
            "features.1.1.block.2.0.weight": (24, 24, 1, 1),
            "features.2.0.block.0.0.weight": (144, 24, 1, 1),
            "features.6.7.block.2.fc2.bias": (1632,),
            "features.7.1.block.3.1.running_var": (448,),
            "features.8.0.weight": (1792, 448, 1, 1),
            "classifier.1.weight": (1000, 1792),
        },
    ),
    "efficientnet_b7": (
        1200,
        "c6f5daf9dfaea933",
        {
            "features.0.0.weight": (64, 3, 3, 3),
            "features.1.3.block.1.fc1.weight": (8, 32, 1, 1),
            "features.5.9.block.1.0.weight": (1344, 1, 5, 5),
            "features.7.3.block.3.0.weight": (640, 3840, 1, 1),
            "features.8.1.running_mean": (2560,),
            "classifier.1.weight": (1000, 2560),
        },
    ),
}


@pytest.mark.parametrize("architecture", sorted(TORCHVISION_KEYS))
def test_state_dict_keys_and_shapes_are_torchvisions(architecture):
    count, fingerprint, sample = TORCHVISION_KEYS[architecture]
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        state = getattr(vision, architecture)().state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert {key: shapes.get(key) for key in sample} == sample
    assert len(shapes) == count
    # The whole ordered list of keys and shapes, as torchvision's state_dict() gives it.
    listing = "\n".join(f"{key}:{shape}" for key, shape in shapes.items())
    assert hashlib.sha256(listing.encode()).hexdigest()[:16] == fingerprint


def test_batch_norm_settings_follow_torchvision():
    with torch.device("meta"):
        b4, b7 = vision.efficientnet_b4(), vision.efficientnet_b7()
    norms = [m for m in b4.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}
    norms = [m for m in b7.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}
