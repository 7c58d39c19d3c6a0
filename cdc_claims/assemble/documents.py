"""Read the files of a claim's documents from Bahmni's document store (the ``DocumentFiles`` port).

Bahmni keeps an uploaded document as a file under ``/home/bahmni/document_images`` and only its
relative path in ``obs.value_text``; OpenMRS keeps a complex obs's file under its application
data directory's ``complex_obs``. The sidecar mounts those directories read-only and reads a
file only when the Claim is rendered for its POST, so no document is ever copied into the
ledger or a Kafka topic.

The limits are checked *before* reading (a stat, then at most ``max_bytes + 1`` bytes, in case
the file grows), so an oversized scan never lands in memory. A path that leaves its store
(``..``, an absolute path, a symlink pointing out) is treated as a missing file: the database
row is not trusted to choose what the sidecar reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cdc_claims.assemble.model import ClaimAttachment, DocumentStore
from cdc_claims.errors import NotClaimable, SourceUnavailable


class LocalDocumentFiles:
    """Documents from local (mounted) directories, within the mapping's size limits."""

    def __init__(
        self,
        documents_dir: Path,
        complex_obs_dir: Path | None,
        *,
        max_bytes: int,
        max_total_bytes: int,
    ) -> None:
        self._roots: dict[DocumentStore, Path | None] = {
            "documents": documents_dir,
            "complex_obs": complex_obs_dir,
        }
        self._max = max_bytes
        self._max_total = max_total_bytes

    def load(self, attachments: Sequence[ClaimAttachment]) -> tuple[bytes, ...]:
        """The content of each attachment, in order.

        Raises :class:`NotClaimable` (``attachment_missing``, ``attachment_too_large``) for
        something billing staff can fix in Bahmni, and :class:`SourceUnavailable` (retriable)
        when the store cannot be read at all (an unmounted volume, no permission)."""
        out: list[bytes] = []
        total = 0
        for attachment in attachments:
            data = self._read(attachment, self._max)
            total += len(data)
            if total > self._max_total:
                raise NotClaimable(
                    "attachment_too_large",
                    f"the documents to attach add up to more than {_mib(self._max_total)}"
                    f" (at document obs {attachment.obs_uuid})",
                )
            out.append(data)
        return tuple(out)

    def _read(self, attachment: ClaimAttachment, limit: int) -> bytes:
        root = self._roots[attachment.store]
        where = f"document obs {attachment.obs_uuid}"
        if root is None:
            raise NotClaimable("attachment_missing", f"{where}: no {attachment.store} directory is configured")
        try:
            base = root.resolve(strict=True)
        except OSError as err:
            raise SourceUnavailable(f"document store {root} cannot be read: {err.strerror}") from err
        relative = Path(attachment.path)
        target = (base / relative).resolve()
        if relative.is_absolute() or not target.is_relative_to(base):
            raise NotClaimable("attachment_missing", f"{where}: its path leaves the document store")
        try:
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise NotClaimable("attachment_missing", f"{where}: its file is not in the document store") from None
        except OSError as err:
            raise SourceUnavailable(f"{where}: its file cannot be read: {err.strerror}") from err
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise NotClaimable("attachment_too_large", f"{where} is {_mib(size)}, the limit is {_mib(limit)}")
            data = fh.read(limit + 1)
        if len(data) > limit:  # grew while read
            raise NotClaimable("attachment_too_large", f"{where} is over {_mib(limit)}")
        if not data:
            raise NotClaimable("attachment_missing", f"{where}: its file is empty")
        return data


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
