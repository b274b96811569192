"""The names --model accepts, without TensorFlow: a bad name is refused before TensorFlow and
Horovod start (trainer/checks.py). models.py and backbones.py build them; a test checks that
this list and theirs are the same (tests/test_trainer_flags.py)."""

OUR_MODELS = ("cnn", "cnn4", "cnn5", "shallow_cnn", "resnet20", "linear")      # models.py
BACKBONE_NAMES = ("resnet50", "mobilenet_v2", "efficientnet_b0", "vgg16")        # backbones.py
MODEL_NAMES = sorted(OUR_MODELS + BACKBONE_NAMES)
