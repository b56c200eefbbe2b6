from kvserve.engine.detokenizer import IncrementalDetokenizer
from kvserve.tokenizer import load_tokenizer

TEXT = "Größe, naïve café, 東京 🙂 and plain words."


def stream(detok, ids):
    pieces = []
    for i in ids:
        detok.add_tokens([i])
        pieces.append(detok.take_new_text(finished=False))
        if detok.stop_reason:
            break
    detok.flush()
    pieces.append(detok.take_new_text(finished=True))
    return pieces


def test_multibyte_text_streams_without_broken_characters(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    ids = tok.encode(TEXT)
    byte_pieces = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in byte_pieces)  # single tokens do split characters
    pieces = stream(IncrementalDetokenizer(tok, tok.encode("Prompt:"), stop=[]), ids)
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_across_tokens_is_cut_and_never_leaks(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    ids = tok.encode(TEXT)
    pieces = stream(IncrementalDetokenizer(tok, [], stop=["café, 東"]), ids)
    assert "".join(pieces) == "Größe, naïve "
    detok = IncrementalDetokenizer(tok, [], stop=["東京"], include_stop=True)
    assert "".join(stream(detok, ids)) == "Größe, naïve café, 東京"
    assert detok.stop_reason == "東京"


def test_unfinished_character_is_flushed_at_the_end(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    ids = tok.encode("東")
    detok = IncrementalDetokenizer(tok, [], stop=[])
    detok.add_tokens(ids[:-1])
    assert detok.take_new_text(finished=False) == ""
    detok.flush()
    assert detok.take_new_text(finished=True) != ""


def test_direct_decoding_equals_the_tokenizers_decode(tiny_llama, tmp_path):
    import random

    from kvserve.engine.detokenizer import ids_decoder
    from kvserve.models.shapes import write_synthetic_tokenizer

    write_synthetic_tokenizer(500, tmp_path)
    rng = random.Random(0)
    for tok in (load_tokenizer(tiny_llama), load_tokenizer(tmp_path)):
        specials = list(getattr(tok, "all_special_ids", []))
        for skip in (True, False):
            decode = ids_decoder(tok, skip)
            for _ in range(200):
                ids = [rng.randrange(min(tok.vocab_size, 500)) for _ in range(rng.randint(1, 8))] + specials[:1]
                assert decode(ids) == tok.decode(ids, skip_special_tokens=skip)
