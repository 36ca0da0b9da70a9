"""`emp_hf.integration.config`: what the configs show of themselves."""

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("config_name", ["EMPConfig", "EMPSeq2SeqConfig", "EMPSFTConfig"])
def test_config_repr_redacts_the_hub_token(tmp_path, config_name):
    if config_name == "EMPSFTConfig":
        pytest.importorskip("trl")
    import emp_hf

    extra = {"bf16": False} if config_name == "EMPSFTConfig" else {}  # SFTConfig defaults to bf16
    config = getattr(emp_hf, config_name)(output_dir=str(tmp_path), hub_token="hf_SECRET_TOKEN", **extra)
    for text in (repr(config), str(config)):
        assert "hf_SECRET_TOKEN" not in text
        assert "hub_token=<HUB_TOKEN>" in text and "pruning_method=emp" in text
