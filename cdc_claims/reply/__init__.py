"""ClaimResponse -> normalized reply (pure)."""

from cdc_claims.errors import ResponseMismatch
from cdc_claims.reply.model import LineOutcome, NormalizedResponse, ReplyMessage, decode_reply, encode_reply
from cdc_claims.reply.normalize import normalize

__all__ = [
    "LineOutcome",
    "NormalizedResponse",
    "ReplyMessage",
    "ResponseMismatch",
    "decode_reply",
    "encode_reply",
    "normalize",
]
