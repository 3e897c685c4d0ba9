"""The studies' models: output shapes on their datasets' inputs, parameter counts against their references,
and what pruning sees of them (which weights are prunable, what a checkpoint holds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError
from prune_lab.masks import PrunableSelection

CONF = Path(__file__).resolve().parent.parent / "conf"
CIFAR = DataInfo("cifar10", (3, 32, 32), 10)
MNIST = DataInfo("mnist", (1, 28, 28), 10)


def build(model: str, info: DataInfo) -> torch.nn.Module:
    """The model as `model=NAME` builds it: from its YAML, through Hydra."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}"])
    return instantiate(cfg.model)(info)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lightcnn9_reference(classes: int) -> int:
    """network_9layers of AlfredXiangWu/LightCNN light_cnn.py, layer by layer (MFM = conv/linear to 2x out)."""
    def conv(i, o, k):
        return i * o * k * k + o

    mfm = [(1, 48, 5), (48, 48, 1), (48, 96, 3), (96, 96, 1), (96, 192, 3), (192, 192, 1), (192, 128, 3),
           (128, 128, 1), (128, 128, 3)]
    return sum(conv(i, 2 * o, k) for i, o, k in mfm) + (8 * 8 * 128 * 512 + 512) + (256 * classes + classes)


# (model, data, expected parameter count, relative tolerance, source)
REFERENCES = [
    ("resnet18", CIFAR, 11_173_962, 0.0, "kuangliu/pytorch-cifar models/resnet.py ResNet18(): 11,173,962"),
    ("resnet20", CIFAR, 272_474, 0.0, "OpenLTH models/cifar_resnet.py cifar_resnet_20 (He et al. 2016: 0.27M)"),
    # kuangliu's VGG('VGG16') has 14,728,266 parameters, 4,224 of them biases of convs that batch norm
    # follows (redundant with BN's shift); ours has none.
    ("vgg16", CIFAR, 14_728_266 - 4_224, 0.0, "kuangliu/pytorch-cifar models/vgg.py VGG('VGG16')"),
    ("lenet_300_100", MNIST, 266_610, 0.0, "Frankle & Carbin 2019, Table 1: 266K (784*300+300+300*100+100+100*10+10)"),
    ("conv2", CIFAR, 4_300_000, 0.01, "Frankle & Carbin 2019, Table 1: Conv-2 4.3M"),
    ("conv4", CIFAR, 2_400_000, 0.02, "Frankle & Carbin 2019, Table 1: Conv-4 2.4M"),
    # Table 1 prints 1.7M for Conv-6, but its own layer list (convs 64,64,P,128,128,P,256,256,P; FC from
    # 4*4*256 to 256, 256, 10) adds up to 2.26M: 1,145,408 conv + 1,117,194 FC parameters. We follow the list.
    ("conv6", CIFAR, (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256) * 9 + 2 * (64 + 128 + 256)
     + 4096 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10, 0.0,
     "Frankle & Carbin 2019, Table 1 layer list for Conv-6"),
    ("lightcnn9", DataInfo("faces", (1, 128, 128), 7), lightcnn9_reference(7), 0.0,
     "AlfredXiangWu/LightCNN light_cnn.py network_9layers at 128x128 input"),
    ("flowers_cnn", DataInfo("flowers", (3, 180, 180), 5),
     (3 * 12 * 9 + 12) + 2 * 12 + (12 * 20 * 9 + 20) + (20 * 32 * 9 + 32) + 2 * 32 + (90 * 90 * 32 * 32 + 32)
     + (32 * 5 + 5), 0.0, "the dynamic-pruning study's write-up: its layer list for 180x180 RGB, 5 classes"),
    ("penguin_mlp_tanh", DataInfo("penguins", (12,), 3), 12 * 12 + 12 + 12 * 3 + 3, 0.0,
     "the dynamic-pruning study's PenguinModel: Linear(12, 12), Linear(12, 3)"),
]


@pytest.mark.parametrize(("model", "info", "expected", "tolerance", "source"), REFERENCES,
                         ids=[r[0] for r in REFERENCES])
def test_parameter_count_matches_reference(model, info, expected, tolerance, source):
    count = n_params(build(model, info))
    assert abs(count - expected) <= tolerance * expected, f"{model}: {count} parameters, {source} says {expected}"


@pytest.mark.parametrize(("model", "shape", "classes"), [
    ("resnet18", (3, 32, 32), 10), ("resnet20", (3, 32, 32), 10), ("vgg16", (3, 32, 32), 10),
    ("flowers_cnn", (3, 180, 180), 5), ("lightcnn9", (1, 128, 128), 7), ("lightcnn9", (1, 144, 144), 7),
    ("penguin_mlp_tanh", (12,), 3), ("lenet_300_100", (1, 28, 28), 10), ("conv2", (3, 32, 32), 10),
    ("conv4", (3, 32, 32), 10), ("conv6", (3, 32, 32), 10),
])
def test_forward_shape_on_its_datasets_input(model, shape, classes):
    net = build(model, DataInfo("d", shape, classes))
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_tanh_models_bound_their_outputs_as_the_study_did():
    out = build("penguin_mlp_tanh", DataInfo("p", (12,), 3))(100 * torch.randn(64, 12))
    assert out.abs().max() <= 1.0


def test_models_refuse_data_they_do_not_fit():
    with pytest.raises(UserError, match="images"):
        build("resnet18", DataInfo("penguins", (12,), 3))
    with pytest.raises(UserError, match="graph dataset"):
        build("gcn", MNIST)
    with pytest.raises(UserError, match="at least 16x16"):
        build("lightcnn9", DataInfo("digits", (1, 8, 8), 10))
    nodes = DataInfo("cora", (), 7)  # a graph's samples are node indices
    for model in ("lenet_300_100", "conv6", "resnet20"):
        with pytest.raises(UserError, match="model=gcn"):
            build(model, nodes)


def test_prunable_weights_of_resnet_and_lightcnn_are_their_convs_and_linears():
    resnet = build("resnet20", CIFAR)
    names = PrunableSelection().names(resnet)
    assert len(names) == 19 + 2 + 1  # 19 3x3 convs, 2 projection shortcuts, the classifier
    assert all(n.endswith("weight") and "bn" not in n for n in names)
    light = PrunableSelection().names(build("lightcnn9", DataInfo("f", (1, 128, 128), 7)))
    assert len(light) == 9 + 1 + 1  # nine MFM convs, the MFM embedding, the classifier


@pytest.fixture(scope="module")
def cora(data_dir: Path):
    from prune_lab.data.cora import Cora

    return Cora(data_dir=str(data_dir)).load()


def test_gcn_on_cora_kipf_welling_size_shape_and_pruning(cora):
    torch.manual_seed(0)
    gcn = build("gcn", cora.info)
    # Kipf & Welling 2017, hidden 16: 1433*16 + 16 (layer 1) + 16*7 + 7 (layer 2).
    assert n_params(gcn) == 1433 * 16 + 16 + 16 * 7 + 7 == 23_063
    idx = cora.test.x[:5]
    assert gcn(idx).shape == (5, 7)
    # Its two weight matrices are prunable like any Linear; the biases (added after propagation) are not.
    assert PrunableSelection().names(gcn) == ["conv1.linear.weight", "conv2.linear.weight"]
    # The graph is a buffer that moves with the model but stays out of checkpoints.
    assert set(gcn.state_dict()) == {"conv1.linear.weight", "conv1.bias", "conv2.linear.weight", "conv2.bias"}
    gcn.eval()
    # Rows are nodes: asking for nodes in another order permutes the output rows and nothing else.
    assert torch.allclose(gcn(idx.flip(0)), gcn(idx).flip(0))


def test_gcn_reaches_75_percent_on_cora_dense_and_prunes_like_any_linear(tmp_path: Path, data_dir: Path):
    """Kipf & Welling's recipe (Adam 0.01, weight decay 5e-4, dropout 0.5, 200 epochs full batch): ~81%."""
    proc = run_cli("dataset=cora", f"dataset.data_dir={data_dir}", "model=gcn", "init=xavier_uniform",
                   "pruner=magnitude", "sparsity=0.5", "train.lr=0.01", "train.epochs=200", "train.finetune_epochs=20",
                   "train.batch_size=140", "train.eval_every=50", "+train.optimizer.weight_decay=0.0005",
                   "cache_dir=null", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dense, pruned = read_json(tmp_path / "run" / "results.json")["levels"]
    assert dense["params_total"] == 23_063
    assert dense["test_acc"] >= 0.75, dense
    # Both weight matrices pruned to 50% each (layerwise magnitude), biases untouched.
    assert set(pruned["layers"]) == {"conv1.linear.weight", "conv2.linear.weight"}
    for layer in pruned["layers"].values():
        assert abs(layer["sparsity"] - 0.5) < 0.01
    assert pruned["test_acc"] >= 0.7, pruned
    size = (tmp_path / "run" / "model.pt").stat().st_size
    assert size < 200_000, f"model.pt is {size} bytes: the graph must not be saved with the weights"
