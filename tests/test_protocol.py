import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triage.protocol import SAMPLE_RATES, ProtocolError, Start, Stop, check_audio_frame, parse_client_text


def start(**fields):
    return json.dumps({"type": "start", "sample_rate": 8000, "encoding": "mulaw", **fields})


def test_start_with_and_without_call_id():
    s = parse_client_text(start(call_id="abc-1", metadata={"caller": "Mme Martin", "floor": 2}))
    assert s == Start("abc-1", 8000, "mulaw", {"caller": "Mme Martin", "floor": 2}, True)
    generated = parse_client_text(start())
    assert len(generated.call_id) == 32 and generated.id_given is False
    assert parse_client_text('{"type": "stop"}') == Stop()


@pytest.mark.parametrize("text, code", [
    ("nope", "bad_json"),
    ("[1, 2]", "bad_message"),
    ('{"type": "dance"}', "unknown_type"),
    ("{}", "unknown_type"),
    (start(sample_rate=8001), "bad_sample_rate"),
    (start(sample_rate="8000"), "bad_sample_rate"),
    (start(sample_rate=True), "bad_sample_rate"),
    (start(encoding="mp3"), "bad_encoding"),
    (start(call_id=""), "bad_field"),
    (start(call_id="x" * 65), "bad_field"),
    (start(call_id=12), "bad_field"),
    (start(metadata=[1]), "bad_field"),
    (start(metadata={"a": {"nested": 1}}), "bad_field"),
    (start(metadata={"a": "x" * 201}), "bad_field"),
    (start(metadata={str(i): i for i in range(21)}), "bad_field"),
    (start(volume=3), "bad_field"),
])
def test_bad_messages_have_codes_and_say_what_was_expected(text, code):
    with pytest.raises(ProtocolError) as e:
        parse_client_text(text)
    assert e.value.code == code and e.value.detail
    assert e.value.to_event()["type"] == "error"


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_protocol_error(text):
    try:
        msg = parse_client_text(text)
    except ProtocolError as e:
        assert e.close_code in (1002, 1003)
        return
    assert isinstance(msg, Start | Stop)


@given(st.dictionaries(st.sampled_from(["type", "call_id", "sample_rate", "encoding", "metadata", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=70), st.sampled_from(
                           ["start", "stop", "mulaw", "alaw", "pcm_s16le", "f32le", *SAMPLE_RATES])),
                       max_size=6))
def test_any_object_parses_or_raises_protocol_error(obj):
    try:
        msg = parse_client_text(json.dumps(obj))
    except ProtocolError:
        return
    if isinstance(msg, Start):
        assert msg.sample_rate in SAMPLE_RATES


@given(st.binary(max_size=64), st.sampled_from(["pcm_s16le", "f32le", "mulaw", "alaw"]))
def test_audio_frames_need_whole_samples(data, encoding):
    s = Start("c", 8000, encoding)
    width = {"pcm_s16le": 2, "f32le": 4, "mulaw": 1, "alaw": 1}[encoding]
    if len(data) % width:
        with pytest.raises(ProtocolError, match="multiple of"):
            check_audio_frame(data, s)
    else:
        check_audio_frame(data, s)


def test_audio_before_start():
    with pytest.raises(ProtocolError) as e:
        check_audio_frame(b"\0\0", None)
    assert e.value.code == "audio_before_start"
