"""The HTTP control API's ``/publish`` body (F28-F30) and JSON body patches (F22).

Input: the request body. It goes through ``handle_control_request`` (which must answer 200
with the items, or 400 with Pushpin's message), ``parse_publish_body`` (items, or
``PublishError``), and each ``body-patch`` is applied to a held JSON body (bytes, or
``PublishError``: the client then gets 502). Anything else is a find.
"""

from __future__ import annotations

from gripd.core.errors import PublishError
from gripd.core.http import HttpResponse
from gripd.core.publish import (
    apply_http_response,
    handle_control_request,
    parse_publish_body,
)

_HELD = HttpResponse(200, "OK", [("Content-Type", "application/json")], b'{"a":[1,2],"b":{}}\n')

# jsonmut: the body is JSON.
JSON_OFFSET = 0

SEEDS = [
    b'{"items":[{"channel":"test","formats":{"http-stream":{"content":"hello\\n"}}}]}',
    b'{"items":[{"channel":"a","id":"2","prev-id":"1","formats":{"http-response":{"code":200,'
    b'"reason":"OK","headers":{"X-A":"b"},"body":"hi\\n"},"ws-message":{"content":"hi"}}}]}',
    b'{"items":[{"channel":"a","formats":{"http-response":{"body-patch":'
    b'[{"op":"replace","path":"/a/0","value":3},{"op":"add","path":"/b/c","value":"d"}]}}}]}',
    b'{"items":[{"channel":"a","formats":{"http-response":{"body-bin":"aGk=",'
    b'"headers":[["X","1"]]},"http-stream":{"action":"close"},'
    b'"ws-message":{"action":"close","code":1000,"reason":"bye"}},"meta":{"k":"v"},'
    b'"size":10,"no-seq":true}]}',
    b'{"items":[{"channel":"a","http-stream":{"content-bin":"aGk=",'
    b'"content-filters":["skip-self"]},"ws-message":{"type":"binary","content-bin":"AA=="}}]}',
    b'{"items":[]}',
]

TOKENS = [
    b'"items"',
    b'"channel"',
    b'"id"',
    b'"prev-id"',
    b'"formats"',
    b'"http-response"',
    b'"http-stream"',
    b'"ws-message"',
    b'"action"',
    b'"send"',
    b'"hint"',
    b'"close"',
    b'"code"',
    b'"reason"',
    b'"headers"',
    b'"body"',
    b'"body-bin"',
    b'"body-patch"',
    b'"content"',
    b'"content-bin"',
    b'"content-filters"',
    b'"type"',
    b'"meta"',
    b'"size"',
    b'"no-seq"',
    b'"op"',
    b'"path"',
    b'"value"',
    b'"from"',
    b'"add"',
    b'"remove"',
    b'"replace"',
    b'"move"',
    b'"copy"',
    b'"test"',
    b'"/a/-"',
    b"99999999999999999999999",
    b"1e400",
    b"-0.5",
    b"true",
    b"null",
]


def fuzz_one(data: bytes) -> None:
    reply = handle_control_request("POST", "/publish", [], data)
    assert reply.code in (200, 400), reply.code
    assert (reply.items is not None) == (reply.code == 200)
    try:
        items = parse_publish_body(data)
    except PublishError:
        assert reply.code == 400
        return
    assert reply.code == 200 and reply.items is not None and len(reply.items) == len(items)
    for item in items:
        assert isinstance(item.channel, str)
        fmt = item.http_response
        if fmt is not None and fmt.action == "send":
            assert fmt.code is not None and 0 <= fmt.code <= 999
            try:
                resp = apply_http_response(_HELD, fmt)
            except PublishError:
                assert fmt.body_patch is not None
                continue
            assert isinstance(resp.body, bytes)
