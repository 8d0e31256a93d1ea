"""Reference images in Cloud Storage: store an upload with its metadata, hand out V4 signed URLs, read back.

Every URL handed out is recorded on its object as ``signed_url_expires_at`` (only ever moved later), so the
control plane's cleanup never deletes an object while a URL for it still works (see controlplane/cleanup).
Objects are named ``reference-images/<asset id>.<ext>``; the asset id is the only handle clients get.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane_client.objects import EXPIRY_METADATA_KEY, read_expiry
from pipeline.images import CheckedImage, ContentType
from pipeline.settings import OBJECT_PREFIX

with warnings.catch_warnings():
    # google-api-core asks for grpcio-status at import; the storage client speaks HTTP only.
    warnings.simplefilter("ignore", ImportWarning)
    from google.api_core import exceptions as gexc
    from google.cloud import storage
    from google.oauth2 import service_account

__all__ = [
    "ASSET_ID_PATTERN",
    "EXPIRY_METADATA_KEY",
    "ReferenceStore",
    "StoredReference",
    "development_signing_credentials",
    "new_client",
    "signing_credentials",
]

ASSET_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_EXTENSIONS = {ContentType.PNG: "png", ContentType.JPEG: "jpg", ContentType.WEBP: "webp"}


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A stored reference image and a signed URL to it (a bearer credential: never logged)."""

    asset_id: str
    object_name: str
    content_type: str
    role: str
    uploader: str
    sha256: str
    size: int
    signed_url: str
    signed_url_expires_at: datetime
    vision: dict[str, str] = field(default_factory=dict)


def development_signing_credentials() -> service_account.Credentials:
    """A throwaway RSA key that signs URLs in development (the emulator does not check signatures)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "pipeline-dev@reference-images-dev.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "development",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    credentials: service_account.Credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    return credentials


def signing_credentials(key_file: Path | None, *, emulated: bool) -> Any:
    """The credentials URLs are signed with: a service account key file; a throwaway key against the emulator;
    otherwise None (the storage client's own credentials, which must be able to sign)."""
    if key_file is not None:
        return service_account.Credentials.from_service_account_file(str(key_file))  # type: ignore[no-untyped-call]
    return development_signing_credentials() if emulated else None


class ReferenceStore:
    """The bucket of reference images, through the real google-cloud-storage client."""

    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        *,
        ttl: timedelta,
        credentials: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._bucket = client.bucket(bucket)
        self._ttl = ttl
        self._credentials = credentials
        self._clock = clock

    def save(
        self, data: bytes, checked: CheckedImage, *, role: str, uploader: str, vision: dict[str, str] | None = None
    ) -> StoredReference:
        """Store an accepted upload under a new asset id, with its metadata (``vision``: what the analysis said,
        kept as ``vision_*`` keys), and sign a URL to it."""
        vision = dict(vision or {})
        asset_id = uuid.uuid4().hex
        name = f"{OBJECT_PREFIX}{asset_id}.{_EXTENSIONS[checked.content_type]}"
        expires_at = self._clock() + self._ttl
        blob = self._bucket.blob(name)
        blob.metadata = {
            "uploader": uploader,
            "sha256": checked.sha256,
            "content_type": checked.content_type.value,
            "role": role,
            EXPIRY_METADATA_KEY: expires_at.isoformat(),
            **{f"vision_{key}": value for key, value in vision.items()},
        }
        # A new name every time; the precondition makes a clash an error instead of an overwrite.
        blob.upload_from_string(data, content_type=checked.content_type.value, if_generation_match=0)
        return StoredReference(
            asset_id=asset_id,
            object_name=name,
            content_type=checked.content_type.value,
            role=role,
            uploader=uploader,
            sha256=checked.sha256,
            size=checked.size,
            signed_url=self._sign(blob),
            signed_url_expires_at=expires_at,
            vision=vision,
        )

    def _find(self, asset_id: str) -> Any | None:
        if not ASSET_ID_PATTERN.fullmatch(asset_id):
            return None
        for blob in self._bucket.list_blobs(prefix=f"{OBJECT_PREFIX}{asset_id}.", max_results=1):
            return blob
        return None

    def resolve(self, asset_id: str) -> StoredReference | None:
        """The reference with a fresh signed URL, its expiry recorded on the object; None when there is none."""
        blob = self._find(asset_id)
        if blob is None:
            return None
        metadata = dict(blob.metadata or {})
        expires_at = self._clock() + self._ttl
        # What cleanup reads: an unreadable expiry is replaced, as if there were none.
        found = read_expiry(metadata)
        recorded = found if isinstance(found, datetime) else None
        if recorded is None or recorded < expires_at:
            # Only ever later: an earlier URL must keep its object alive until it expires.
            metadata[EXPIRY_METADATA_KEY] = expires_at.isoformat()
            blob.metadata = metadata
            try:
                blob.patch(if_metageneration_match=blob.metageneration)
            except gexc.PreconditionFailed:
                # Someone patched it meanwhile (another resolve): read theirs and keep the later of the two.
                return self.resolve(asset_id)
        return StoredReference(
            asset_id=asset_id,
            object_name=blob.name,
            content_type=metadata.get("content_type", blob.content_type or ""),
            role=metadata.get("role", ""),
            uploader=metadata.get("uploader", ""),
            sha256=metadata.get("sha256", ""),
            size=int(blob.size or 0),
            signed_url=self._sign(blob),
            signed_url_expires_at=expires_at,  # this URL's; the object's record may be later (an earlier, longer one)
            vision={key.removeprefix("vision_"): value for key, value in metadata.items() if key.startswith("vision_")},
        )

    def exists(self, object_name: str) -> bool:
        """Whether the object is still in the bucket (one metadata read; a purge or the cleanup may delete it)."""
        found: bool = self._bucket.blob(object_name).exists()
        return found

    def download(self, object_name: str) -> bytes:
        """The stored bytes of an object."""
        data: bytes = self._bucket.blob(object_name).download_as_bytes()
        return data

    def _sign(self, blob: Any) -> str:
        url: str = blob.generate_signed_url(
            version="v4", expiration=self._ttl, method="GET", credentials=self._credentials
        )
        return url


def new_client(project: str) -> storage.Client:
    """A storage client for ``project`` (it honours ``STORAGE_EMULATOR_HOST``)."""
    return storage.Client(project=project)
