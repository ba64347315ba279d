from pathlib import Path

import pytest

from ragcli.errors import ConfigError
from ragcli.settings import Settings, load_settings


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, environ={}, cwd=tmp_path)
    assert settings == Settings()
    assert settings.store.name == "store"


def test_precedence_flag_over_env_over_toml_over_default(tmp_path: Path) -> None:
    (tmp_path / "ragcli.toml").write_text('top_k = 3\ncandidates = 7\nstore = "/from/toml"\n')
    env = {"RAGCLI_TOP_K": "4", "RAGCLI_STORE": "/from/env"}
    settings = load_settings({"top_k": 9, "store": None}, environ=env, cwd=tmp_path)
    assert settings.top_k == 9  # flag
    assert settings.store == Path("/from/env")  # env beats toml; None flag = not given
    assert settings.candidates == 7  # toml beats default
    assert settings.max_tokens == Settings().max_tokens  # default


def test_config_from_env_variable_and_ragcli_table(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text("[ragcli]\nmin_confidence = 0.5\n")
    settings = load_settings({}, environ={"RAGCLI_CONFIG": str(config)}, cwd=tmp_path)
    assert settings.min_confidence == 0.5


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("top_k = 'many'", "top_k must be an integer"),
        ("top_k = 0", "at least 1"),
        ("colour = 'blue'", "unknown setting(s): colour"),
        ("top_k = ", "not valid TOML"),
        ("min_confidence = 5.0", "between 0 and 2"),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "ragcli.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({}, environ={}, cwd=tmp_path)


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RAGCLI_TOP_K"):
        load_settings({}, environ={"RAGCLI_TOP_K": "three"}, cwd=tmp_path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, config=tmp_path / "nope.toml", environ={}, cwd=tmp_path)


def test_fingerprint_changes_with_settings(tmp_path: Path) -> None:
    """Equal settings reached by different routes (a file, the environment, the round trip through
    an audit record) share a fingerprint; any one changed field changes it."""
    (tmp_path / "ragcli.toml").write_text("top_k = 4\n")
    from_file = load_settings({}, environ={}, cwd=tmp_path)
    from_env = load_settings({}, environ={"RAGCLI_TOP_K": "4"}, cwd=tmp_path / "elsewhere")
    assert from_file.fingerprint() == from_env.fingerprint()
    assert Settings.from_json(from_file.to_json()).fingerprint() == from_file.fingerprint()
    assert len(from_file.fingerprint()) == 16
    base = Settings(top_k=4)
    changed = {Settings(top_k=2), Settings(top_k=4, seed=7), Settings(top_k=4, mode="extractive"),
               Settings(top_k=4, min_confidence=0.6)}
    assert len({s.fingerprint() for s in changed} | {base.fingerprint()}) == len(changed) + 1


def test_relative_paths_in_toml_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "ragcli.toml").write_text('store = ".ragcli/store"\n')
    settings = load_settings({}, config=tmp_path / "proj" / "ragcli.toml", environ={},
                             cwd=tmp_path)
    assert settings.store == tmp_path / "proj" / ".ragcli" / "store"


def test_object_storage_store_uris_stay_uris(tmp_path: Path) -> None:
    (tmp_path / "ragcli.toml").write_text('store = "s3://bucket/ragcli/handbook/"\n')
    assert load_settings({}, environ={}, cwd=tmp_path).store == "s3://bucket/ragcli/handbook"
    env = {"RAGCLI_STORE": "gs://bucket/kb"}
    assert load_settings({}, environ=env, cwd=tmp_path).store == "gs://bucket/kb"
    assert load_settings({"store": "az://container/kb"}, environ=env, cwd=tmp_path).store \
        == "az://container/kb"
    (tmp_path / "ragcli.toml").write_text('store = "http://example.com/kb"\n')
    with pytest.raises(ConfigError, match="not a store directory or an s3://"):
        load_settings({}, environ={}, cwd=tmp_path)
