"""What the pipeline's OpenAPI document says of the upload, a route that reads its multipart form itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from pipeline.problems import PROBLEM_MEDIA_TYPE

__all__ = ["UPLOAD_REFUSALS", "ProblemDetails", "UploadOperation"]


class ProblemDetails(msgspec.Struct):
    """An RFC 9457 problem; ``type`` ends in a stable slug (`file-missing`, `image-too-large`, ...)."""

    type: str
    title: str
    status: int
    detail: str


_UPLOAD_FORM = Schema(
    type=OpenAPIType.OBJECT,
    required=["file", "user_id"],
    properties={
        "file": Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream", description="The image"),
        "user_id": Schema(type=OpenAPIType.STRING, description="The uploader: the flag's targeting key"),
        "role": Schema(type=OpenAPIType.STRING, description="What the image is a reference for"),
    },
)


@dataclasses.dataclass
class UploadOperation(Operation):
    """The upload's operation with its multipart body (the handler reads the form itself, to refuse with slugs)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"multipart/form-data": OpenAPIMediaType(schema=_UPLOAD_FORM)}, required=True
        )


def _refusal(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetails, description=description, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False
    )


UPLOAD_REFUSALS: dict[int, Any] = {
    400: _refusal("No `file` or no `user_id` field (`file-missing`, `user-id-missing`)"),
    403: _refusal("Reference images are off for this user (`reference-images-disabled`)"),
    413: _refusal("The image is over the size limit (`image-too-large`)"),
    415: _refusal("Not an image type the service takes (`image-unsupported-type`)"),
    422: _refusal("A bad role, or an image that is corrupt or rejected (`invalid-role`, `image-corrupt`, ...)"),
    503: _refusal("Vision or storage did not answer (`vision-unavailable`, `storage-unavailable`)"),
}
