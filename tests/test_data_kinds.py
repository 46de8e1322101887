"""``lc.measure`` takes the data a researcher already holds (issue 23, part 1): a folder, an EvalData, a torch
Dataset (PIL or tensor items), a DataLoader and tensors ``(x, y)`` give the same rows for the same images; what
tensor values mean is explicit (``data_space``); a store refuses a resume with other data."""
from __future__ import annotations

from functools import partial

import pandas as pd
import pytest
import torch
from conftest import TinyCNN, noise_image_folder
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

import layercrit as lc
from layercrit.data.datasets import draw_indices
from layercrit.errors import ConfigError, LayercritError

SIZE = 16  # the model's input size: 20 x 24 images are resized (shorter side 16) and center-cropped
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
SAMPLES, SEED = 10, 3
KW = dict(factory=partial(TinyCNN, 3), normalize=(MEAN, STD), reset=["random", "zero"], trials=2, seed=SEED, batch_size=4,
          progress=False)


@pytest.fixture
def folder(tmp_path):
    return noise_image_folder(tmp_path / "images", ["ant", "bee", "cat"], per_class=4, size=(20, 24), seed=1)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyCNN(3)


def _transform(last):
    return transforms.Compose([transforms.Resize(SIZE), transforms.CenterCrop(SIZE), last])


def _tensors(root):
    """The folder's images as the model sees them, in the dataset's (sorted) order: 8-bit, and labels."""
    ds = ImageFolder(str(root), transform=_transform(transforms.PILToTensor()))
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor(ds.targets)


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["elapsed_seconds"])


def test_every_data_kind_gives_the_same_rows_for_the_same_images(folder, net):
    x, y = _tensors(folder)
    drawn = draw_indices(len(y), SAMPLES, SEED)  # the order a folder's draw measures in
    kinds = {
        "folder": str(folder),
        "EvalData": lc.EvalData.from_tensors(x, y, ["ant", "bee", "cat"]),
        "tensors": (x, y),
        "float tensors": (x.float() / 255, y),  # ToTensor()'s [0, 1] floats: the same images
        "Dataset of PIL images": ImageFolder(str(folder)),
        "Dataset of tensors": ImageFolder(str(folder), transform=_transform(transforms.ToTensor())),
        "DataLoader": DataLoader(Subset(ImageFolder(str(folder), transform=_transform(transforms.PILToTensor())),
                                        drawn), batch_size=4, shuffle=False),
        "DataLoader of PIL images": DataLoader(Subset(ImageFolder(str(folder)), drawn), batch_size=3,
                                               collate_fn=lambda items: items),
    }
    tables = {kind: lc.measure(net, data, samples=SAMPLES, input_size=SIZE, **KW) for kind, data in kinds.items()}
    reference = _rows(tables["folder"])
    assert len(reference) == 3 * 3 and set(reference.n_samples) == {SAMPLES}
    for kind, table in tables.items():
        pd.testing.assert_frame_equal(_rows(table), reference, check_exact=True, obj=kind)


def test_a_dataloader_is_consumed_in_its_own_order_and_samples_caps_it(folder, net):
    x, y = _tensors(folder)
    loader = DataLoader(ImageFolder(str(folder), transform=_transform(transforms.PILToTensor())), batch_size=5,
                        shuffle=False)
    whole = lc.measure(net, loader, samples=None, **KW)  # every image, in the loader's order
    pd.testing.assert_frame_equal(_rows(whole), _rows(lc.measure(net, (x, y), **KW)), check_exact=True)
    first = lc.measure(net, loader, samples=7, **KW)
    assert set(first.n_samples) == {7}
    pd.testing.assert_frame_equal(_rows(first), _rows(lc.measure(net, (x[:7], y[:7]), **KW)), check_exact=True)


def test_a_calibrated_run_draws_from_a_dataset_as_from_a_folder(folder, net):
    kw = {**KW, "temperature": "calibrate", "calibration_samples": 2, "samples": 8, "input_size": SIZE}
    from_folder = lc.measure(net, str(folder), **kw)
    pd.testing.assert_frame_equal(_rows(lc.measure(net, ImageFolder(str(folder)), **kw)), _rows(from_folder),
                                  check_exact=True)
    with pytest.raises(ConfigError) as e:
        lc.measure(net, DataLoader(ImageFolder(str(folder)), collate_fn=lambda items: items), **kw)
    assert e.value.fields == ("temperature", "data")


def test_a_resume_with_other_data_is_refused(folder, net, tmp_path):
    x, y = _tensors(folder)
    db = str(tmp_path / "kinds.db")
    lc.measure(net, (x, y), store=db, **KW)
    again = lc.measure(net, lc.EvalData.from_tensors(x, y), store=db, **KW)  # the same images: resumed, not refused
    assert len(again) == 3 * 3
    with pytest.raises(LayercritError, match="data_fingerprint"):
        lc.measure(net, (x.flip(-1), y), store=db, **KW)  # other images
    with pytest.raises(LayercritError, match="data_fingerprint"):
        lc.measure(net, (x, y.roll(1)), store=db, **KW)  # other labels
    with pytest.raises(LayercritError, match="data_fingerprint"):
        lc.measure(net, ImageFolder(str(folder)), samples=SAMPLES, input_size=SIZE, store=db, **KW)  # a draw


def test_normalized_tensors_are_refused_as_images_and_measured_as_input(folder, net):
    x, y = _tensors(folder)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    normalized = (x.float().div(255) - mean) / std  # what a Normalize transform hands over
    with pytest.raises(ConfigError) as e:
        lc.measure(net, (normalized, y), **KW)
    assert e.value.fields == ("data_space",) and "data_space='input'" in str(e.value)
    as_input = lc.measure(net, (normalized, y), data_space="input", **KW)
    as_images = lc.measure(net, (x, y), **KW)
    pd.testing.assert_frame_equal(_rows(as_input), _rows(as_images), check_exact=False, rtol=1e-4, atol=1e-3)
    # a model without a normalization takes [0, 1] images too: other values only as its input, said so
    with pytest.raises(ConfigError, match="if they are what the network takes") as e:
        lc.measure(net, (normalized, y), **{**KW, "normalize": None})
    assert e.value.fields == ("data_space",)
    lc.measure(net, (normalized, y), data_space="input", **{**KW, "normalize": None})


def test_float_images_must_be_in_0_1_up_to_a_resampling_overshoot(folder, net):
    x, y = _tensors(folder)
    images = x.float().div(255)
    with pytest.raises(ConfigError, match="look normalized .or mean-subtracted. already") as e:
        lc.measure(net, (images - images.mean(), y), **KW)  # mean-subtracted: about -0.5..0.5
    assert e.value.fields == ("data_space",)
    with pytest.raises(ConfigError, match="0-255 pixel values; divide them by 255") as e:
        lc.measure(net, (images * 255, y), **KW)
    assert e.value.fields == ("data",)
    overshoot = (images - 0.5) * 1.08 + 0.5  # a bicubic resize's ringing: -0.04 .. 1.04
    plain = lc.measure(net, (images, y), **KW)
    assert len(lc.measure(net, (overshoot, y), **KW)) == len(plain)


def test_data_space_is_checked(folder, net):
    x, y = _tensors(folder)
    for data, space, fields in [((x, y), "input", ("data_space",)),  # 8-bit images are not the network's input
                                (str(folder), "input", ("data_space",)),
                                ((x, y), "pixels", ("data_space",))]:
        with pytest.raises(ConfigError) as e:
            lc.measure(net, data, data_space=space, input_size=SIZE, **KW)
        assert e.value.fields == fields


def test_pil_images_need_the_models_input_size(folder, net):
    with pytest.raises(ConfigError) as e:
        lc.measure(net, ImageFolder(str(folder)), samples=4, **KW)
    assert e.value.fields == ("input_size",)


def test_bad_data_is_one_error_naming_data(net):
    x = torch.rand(6, 3, 8, 8)
    for data in [(x, torch.rand(6)), (x[0], torch.zeros(6, dtype=torch.long)), (x, torch.zeros(5, dtype=torch.long)),
                 [1, 2, 3], (x.mul(float("nan")), torch.zeros(6, dtype=torch.long))]:
        with pytest.raises(ConfigError) as e:
            lc.measure(net, data, normalize=None, reset="zero", progress=False)
        assert e.value.fields == ("data",)


def test_tensor_labels_need_not_cover_every_class_of_the_model(net):
    x = torch.rand(8, 3, 8, 8)
    df = lc.measure(net, (x, torch.zeros(8, dtype=torch.long)), normalize=None, reset="zero", progress=False)
    assert len(df) == 3


# --- the review's defects: a shuffling DataLoader, Dataset labels, refusals from workers, channels, samples,
# --- and the order target_ci measures in

def _items(n: int, size: int = 8) -> list:
    torch.manual_seed(0)
    return [(torch.rand(3, size, size), i % 3) for i in range(n)]


def test_a_shuffling_dataloader_is_refused_naming_data():
    from torch.utils.data import BatchSampler, RandomSampler, TensorDataset
    ds = TensorDataset(torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    sampler = BatchSampler(RandomSampler(ds), batch_size=2, drop_last=False)
    for loader in [DataLoader(ds, batch_size=2, shuffle=True),  # a RandomSampler on loader.sampler
                   DataLoader(ds, batch_sampler=sampler)]:  # ... on loader.batch_sampler.sampler
        with pytest.raises(ConfigError) as e:
            lc.data.as_eval_data(loader)
        assert e.value.fields == ("data",)
        assert "shuffle=False" in str(e.value) and "dataset" in str(e.value) and "each time" in str(e.value)
    assert len(lc.data.as_eval_data(DataLoader(ds, batch_size=2, shuffle=False))) == 6


@pytest.mark.parametrize("bad, shown", [(2.9, "2.9"), (2.0, "2.0"), ("3", "'3'"), (True, "True"),
                                        (torch.tensor([0.0, 1.0, 0.0]), "tensor("), (torch.tensor(1.0), "tensor("),
                                        (torch.tensor([1]), "tensor(")])
def test_dataset_labels_follow_the_tensor_rule(bad, shown):
    items = _items(5)
    items[3] = (items[3][0], bad)
    with pytest.raises(ConfigError) as e:
        lc.data.as_eval_data(_ListDataset(items), draw=False)
    assert e.value.fields == ("data",)
    assert "item 3" in str(e.value) and shown in str(e.value)
    with pytest.raises(ConfigError) as e:  # the tensor path: the reference
        lc.data.as_eval_data((torch.rand(2, 3, 8, 8), torch.tensor([1.0, 2.0])))
    assert e.value.fields == ("data",)


def test_dataset_labels_may_be_any_integer_scalar():
    import numpy as np
    labels = [0, np.int64(1), torch.tensor(2), torch.tensor(1, dtype=torch.int32), np.array(0)]
    items = [(torch.rand(3, 8, 8), label) for label in labels]
    data = lc.data.as_eval_data(_ListDataset(items), draw=False)
    assert data.labels.tolist() == [0, 1, 2, 1, 0] and data.labels.dtype == torch.int64


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("n", [10, 300])  # from 256 items up, the items are converted in worker processes
def test_a_refusal_in_a_dataset_is_the_same_error_with_workers(n):
    from PIL import Image
    items = [(Image.new("RGB", (10, 12)), i % 3) for i in range(n)]
    with pytest.raises(ConfigError) as e:  # PIL images and no input_size
        lc.data.as_eval_data(_ListDataset(items), num_workers=2 if n > 10 else 0)
    assert e.value.fields == ("input_size",) and str(e.value).startswith("the data holds PIL images")
    bad = _items(n)
    bad[n - 1] = (torch.rand(8, 8), 0)  # not a [C, H, W] image
    with pytest.raises(ConfigError) as e:
        lc.data.as_eval_data(_ListDataset(bad), draw=False)
    assert e.value.fields == ("data",) and str(e.value).startswith("data: each image must be")


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_images_must_have_three_channels(channels):
    x, y = torch.rand(4, channels, 8, 8), torch.tensor([0, 1, 2, 0])
    items = [(x[i], int(y[i])) for i in range(4)]
    for data in [(x, y), _ListDataset(items), DataLoader(_ListDataset(items), batch_size=2)]:
        with pytest.raises(ConfigError) as e:
            lc.data.as_eval_data(data)
        assert e.value.fields == ("data",) and "RGB" in str(e.value) and f"{channels} channel" in str(e.value)


def test_samples_must_be_at_least_one_for_every_data_kind():
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    items = [(x[i], int(y[i])) for i in range(4)]
    with pytest.raises(ConfigError) as e:
        lc.data.as_eval_data((x, y), samples=0)
    expected = str(e.value)
    for data in [(x, y), lc.EvalData.from_tensors(x, y), _ListDataset(items), DataLoader(_ListDataset(items))]:
        for samples in (0, -2):
            with pytest.raises(ConfigError) as e:
                lc.data.as_eval_data(data, samples=samples)
            assert e.value.fields == ("samples",) and str(e.value) == expected.replace("0", str(samples))


def _sorted_by_class(n: int = 150):
    """``n`` images sorted by class, class 0 black: the order a prefix of which is no sample of the whole."""
    torch.manual_seed(1)
    y = torch.arange(n) * 3 // n
    x = torch.rand(n, 3, 8, 8)
    x[y == 0] = 0
    return x, y


def test_data_not_drawn_by_layercrit_is_put_in_a_seeded_order_on_request():
    x, y = _sorted_by_class(30)
    order = draw_indices(30, None, SEED)
    loader = DataLoader(_ListDataset([(x[i], int(y[i])) for i in range(30)]), batch_size=4)
    for data in [(x, y), lc.EvalData.from_tensors(x, y), loader]:
        given = lc.data.as_eval_data(data, seed=SEED)
        assert torch.equal(given.labels, y)  # as before: the given order
        shuffled = lc.data.as_eval_data(data, seed=SEED, shuffle=True)
        assert torch.equal(shuffled.labels, y[order]) and torch.equal(shuffled.images, given.images[order])
        again = lc.data.as_eval_data(data, seed=SEED, shuffle=True)
        assert again.fingerprint == shuffled.fingerprint
        other = lc.data.as_eval_data(data, seed=SEED + 1, shuffle=True)
        assert not torch.equal(other.labels, shuffled.labels)
    capped = lc.data.as_eval_data(loader, samples=12, seed=SEED, shuffle=True)  # the loader's first 12, shuffled
    assert torch.equal(capped.labels, y[:12][draw_indices(12, None, SEED)])


def test_target_ci_measures_given_data_in_a_seeded_order(net):
    from torch.utils.data import TensorDataset
    x, y = _sorted_by_class(150)
    kw = {**KW, "normalize": None, "target_ci": 50.0, "reset": ["zero"], "trials": 1, "batch_size": 10}
    drawn = lc.measure(net, TensorDataset(x, y), samples=None, **kw)  # a Dataset is drawn with seed: the reference
    for data in [(x, y), lc.EvalData.from_tensors(x, y), DataLoader(TensorDataset(x, y), batch_size=10)]:
        pd.testing.assert_frame_equal(_rows(lc.measure(net, data, samples=None, **kw)), _rows(drawn),
                                      check_exact=True, obj=type(data).__name__)
