import pytest
import torch


def test_encoder_loads_offline_and_encodes(text_encoder):
    e = text_encoder(["a red house on snow at night", "a blue car", ""])
    assert e.states.shape == (3, text_encoder.max_tokens, 384)
    assert e.mask.shape == (3, text_encoder.max_tokens)
    assert e.mask[2].sum() == 2  # the empty prompt is just [CLS] [SEP]
    assert e.pooled.shape == (3, 384)
    assert not torch.allclose(e.pooled[0], e.pooled[1])


def test_encoder_knows_meaning(text_encoder):
    # a pretrained encoder puts paraphrases closer than unrelated prompts
    p = text_encoder(["a house at night", "a home in the dark", "a yellow car on sand"]).pooled
    cos = torch.nn.functional.cosine_similarity
    assert cos(p[0:1], p[1:2]) > cos(p[0:1], p[2:3])


def test_over_long_prompt_is_truncated_with_warning(text_encoder):
    with pytest.warns(UserWarning, match="only the first"):
        e = text_encoder("a red house " * 40)
    assert e.mask.sum() == text_encoder.max_tokens


def test_rare_token_split(text_encoder):
    assert len(text_encoder.tokens("beikkpic")) > 1
    assert not text_encoder.is_known_word("beikkpic")
    assert text_encoder.is_known_word("house")
