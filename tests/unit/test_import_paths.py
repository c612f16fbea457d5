"""Import paths users rely on stay where the README shows them, whatever
moves inside the package."""
import hmac
import time
from hashlib import sha256

import ingest.client
import ingest.server.webhooks
import ingest.webhooks


def test_webhooks_verify_is_importable_where_the_readme_says():
    from ingest.webhooks import verify

    assert verify is ingest.server.webhooks.verify
    secret, body, stamp = b"s3cret", b'{"receipt":"r1"}', str(int(time.time()))
    signature = hmac.new(secret, stamp.encode() + b"." + body, sha256).hexdigest()
    assert verify(secret, f"t={stamp},v1={signature}", body)
    assert not verify(secret, f"t={stamp},v1={signature}", body + b" ")


def test_client_names_the_readme_uses_are_exported():
    for name in ("Client", "AsyncClient", "post_ndjson", "IngestError", "RetryPolicy"):
        assert name in ingest.client.__all__ and hasattr(ingest.client, name)
