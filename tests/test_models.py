"""Model specs, the cifar_resnet50 family and safe checkpoint round trips."""
import pytest
import torch

import layercrit as lc
from layercrit.errors import LayercritError
from layercrit.models import load_state_dict, save_safetensors


@pytest.mark.parametrize("name,width", [("cifar_resnet50", 16), ("cifar_resnet50_w32", 32), ("cifar_resnet50_w64", 64)])
def test_cifar_resnet50_has_the_resnet50_layers(name, width):
    import torchvision

    bundle = lc.create_model(f"arch:{name}")
    ours = [(layer.name, layer.module_type) for layer in lc.discover_layers(bundle.network, 32)]
    ref = [(n, type(m).__name__) for n, m in torchvision.models.resnet50().named_modules()
           if type(m).__name__ in ("Conv2d", "Linear")]
    assert ours == ref
    net = bundle.network
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (2, 2)
    assert net.conv1.out_channels == width and net.fc.in_features == width * 32
    assert bundle.model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_safetensors_and_state_dict_round_trip(tmp_path):
    src = lc.create_model("arch:cifar_resnet50", init_seed=11)
    st = tmp_path / "w.safetensors"
    save_safetensors(src.network, st)
    assert lc.create_model(f"file:{st}", arch="cifar_resnet50").checksum() == src.checksum()
    pt = tmp_path / "w.pth"
    torch.save({"epoch": 5, "model_state_dict": {f"module.{k}": v for k, v in src.network.state_dict().items()}}, pt)
    loaded = lc.create_model(f"file:{pt}", arch="cifar_resnet50")
    assert loaded.checksum() == src.checksum() and loaded.model_id == "w"
    assert len(load_state_dict(pt)) == len(src.network.state_dict())


def test_file_spec_needs_arch_and_specs_are_checked(tmp_path):
    with pytest.raises(LayercritError, match="needs arch=<architecture>"):  # from Python: the parameter's name
        lc.create_model(f"file:{tmp_path}/x.safetensors")
    with pytest.raises(LayercritError, match="not a readable .safetensors"):
        (tmp_path / "bad.safetensors").write_bytes(b"garbage")
        lc.create_model(f"file:{tmp_path}/bad.safetensors", arch="cifar_resnet50")
    with pytest.raises(LayercritError, match="unknown weights"):
        lc.create_model("torchvision:resnet50:NOPE")


def test_normalization_belongs_to_the_model():
    bundle = lc.create_model("arch:cifar_resnet50")
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), bundle.network((x - mean) / std))
    raw = lc.create_model("arch:cifar_resnet50", mean=(0, 0, 0), std=(1, 1, 1))
    with torch.no_grad():
        assert torch.allclose(raw.model(x), raw.network(x))


def test_offline_pretrained_download_is_a_clear_error(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(LayercritError, match="could not get pretrained weights for timm:resnet50"):
        lc.create_model("timm:resnet50")
