"""Opening a saved checkpoint (inference/checkpoint.py): which step a weights file holds."""
from inference.checkpoint import step_of


def test_step_of_reads_only_weights_file_names():
    assert step_of("ck/run/step_12") == 12
    assert step_of("ck/run/step_12.train_state.pt") is None and step_of("ck/run/all_config.yaml") is None
