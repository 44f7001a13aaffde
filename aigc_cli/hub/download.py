"""Fetching a model from the Hugging Face hub through ``huggingface_hub``: its cache (shared with
transformers and diffusers, ``HF_HOME``), resumable downloads, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE``. Two steps, so that only what the format needs is downloaded: the small
config files first (the format is detected from them), then that format's files alone."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from aigc_cli.core.errors import ConfigError
from aigc_cli.hub.formats import detect_format, get_format

# What the format is detected from: a model's or a pipeline's configs, never weights.
CONFIG_FILES = ["config.json", "model_index.json", "scheduler_config.json", "*/config.json",
                "*/scheduler_config.json", "tokenizer_config.json"]


def snapshot(repo_id: str, revision: str | None, fmt: str | None,
             say: Callable[[str], None]) -> tuple[Path, str]:
    """(the local snapshot folder of ``repo_id`` with the files its format needs, its commit)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}" + (f" at {revision}" if revision else "")

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        except GatedRepoError:
            raise ConfigError(f"{repo_id} is gated: accept its terms on the hub and log in (hf auth login), "
                              "then import again") from None
        except RepositoryNotFoundError:
            raise ConfigError(f"no model {repo_id!r} on the hub (or it is private: log in with hf auth login)") from None
        except RevisionNotFoundError:
            raise ConfigError(f"{repo_id} has no revision {revision!r}") from None
        except LocalEntryNotFoundError:
            raise ConfigError(
                f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
                "cannot be reached (HF_HUB_OFFLINE set, or no network): download it where there is network "
                f"(hf download {repo_id}) into that cache, or give aigc import a local folder") from None
        except EntryNotFoundError as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from None
        except HfHubHTTPError as e:
            raise ConfigError(f"the hub refused {where}: {str(e).splitlines()[0]}") from None
        except OSError as e:
            raise ConfigError(f"cannot download {where}: {e.strerror or e}") from None

    say(f"fetching {where} from the Hugging Face hub (cached in {constants.HF_HUB_CACHE})")
    folder = fetch(CONFIG_FILES)
    form = get_format(fmt) if fmt is not None else detect_format(folder)
    folder = fetch(form.files())
    return folder, folder.name  # snapshots/<commit>
