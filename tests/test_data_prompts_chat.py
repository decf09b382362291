import pytest

from cdra.data import PROMPTS, TaskExample, format_chat, get_prompt, render_prompt

R1_PREAMBLE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process is enclosed within <think> "
    "</think> and answer is enclosed within <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)

REQUIRED = [
    "r1_zero",
    "r1_short",
    "question_only",
    "cdra_steps",
    "critique_rl_inference",
    "critique_rl_critique",
    "critique_rl_refine",
    "critique_rl_inference_short",
    "critique_rl_critique_short",
    "critique_rl_refine_short",
    "genprm_step_judge",
    "sr_r1_judge",
]

ALL_FIELDS = dict(
    question="Q?",
    response="R.",
    critique="C.",
    previous_steps="Step 1: a",
    current_step="Step 2: b",
    response_a="RA",
    response_b="RB",
)


def test_registry_has_required_names():
    assert set(REQUIRED) <= set(PROMPTS)
    for name, template in PROMPTS.items():
        assert template.name == name
        text = render_prompt(name, **ALL_FIELDS)
        assert "{" not in text.replace("\\boxed{", "")  # every field filled


def test_exact_prompts():
    assert render_prompt("r1_zero", question="What is 1+1?") == (
        R1_PREAMBLE + "\nUser: What is 1+1?\nAssistant: <think>"
    )
    assert render_prompt("r1_short", question="Q") == "User: Q\nAssistant: <think>"
    assert render_prompt("question_only", question="Q {x}") == "Q {x}"
    assert render_prompt("critique_rl_inference_short", question="Q") == "Q: Q\nA:"
    assert render_prompt("critique_rl_critique_short", question="Q", response="R") == "Q: Q\nA: R\nCritique:"
    assert render_prompt("critique_rl_refine_short", question="Q", response="R", critique="C") == (
        "Q: Q\nA: R\nCritique: C\nRevised A:"
    )
    assert get_prompt("r1_zero").stop == ("</answer>",)


def test_long_prompts_contain_their_parts():
    crit = render_prompt("critique_rl_critique", **ALL_FIELDS)
    for part in ("Q?", "R.", "Step sentence:", "Correctness of the step:", "Explanation:",
                 "Correctness of the final answer:"):
        assert part in crit
    refine = render_prompt("critique_rl_refine", **ALL_FIELDS)
    assert all(p in refine for p in ("Q?", "R.", "C.", "The answer is"))
    assert "The answer is" in render_prompt("critique_rl_inference", question="Q?")
    assert "Step 1:" in render_prompt("cdra_steps", question="Q?")
    judge = render_prompt("genprm_step_judge", **ALL_FIELDS)
    assert all(p in judge for p in ("Q?", "Step 1: a", "Step 2: b", "**Reasoning:**", "**SCORE:**"))
    sr = render_prompt("sr_r1_judge", **ALL_FIELDS)
    for p in ("Q?", "RA", "RB", "Winner: response A", "Winner: response B", "Correctness", "Completeness",
              "Explanation", "Notation", "Quality", "Relevance"):
        assert p in sr
    assert sr.index("RA") < sr.index("RB")


def test_render_errors_and_example_call():
    with pytest.raises(ValueError, match="unknown prompt 'nope'.*r1_zero"):
        render_prompt("nope", question="Q")
    with pytest.raises(ValueError, match=r"missing \['critique'\]"):
        render_prompt("critique_rl_refine", question="Q", response="R")
    ex = TaskExample("id", "What?", "1")
    assert PROMPTS["r1_short"](ex) == "User: What?\nAssistant: <think>"
    assert render_prompt("r1_short", question="Q", unused="x") == "User: Q\nAssistant: <think>"


SYS_CONVO = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]
ONE = [{"role": "user", "content": "Hi"}]


def test_chatml():
    assert format_chat(ONE, template="chatml") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert format_chat(ONE, template="chatml", add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"
    assert format_chat(SYS_CONVO, template="chatml") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama2():
    assert format_chat(ONE, template="llama2") == "[INST] Hi [/INST]"
    assert format_chat(SYS_CONVO, template="llama2") == (
        "[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]"
    )
    assert format_chat(SYS_CONVO[:3], template="llama2") == "[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s>"


def test_llama3():
    assert format_chat(ONE, template="llama3") == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert format_chat(SYS_CONVO[:3], template="llama3") == (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
    )


def test_default_and_none():
    assert format_chat(ONE, template="default") == "Human: Hi\n\nAssistant:"
    assert format_chat(SYS_CONVO, template="default") == "S\n\nHuman: U1\n\nAssistant: A1\n\nHuman: U2\n\nAssistant:"
    assert format_chat(ONE, template="default", add_generation_prompt=False) == "Human: Hi"
    assert format_chat(ONE, template="none") == "Hi"
    assert format_chat(SYS_CONVO, template="none") == "U1\nU2"


class FakeTokenizer:
    chat_template = "{{ stuff }}"

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        assert tokenize is False
        return f"FAKE{len(messages)}{add_generation_prompt}"


class NoTemplateTokenizer:
    chat_template = None


def test_auto():
    assert format_chat(ONE, FakeTokenizer()) == "FAKE1True"
    assert format_chat(ONE, FakeTokenizer(), add_generation_prompt=False) == "FAKE1False"
    assert format_chat(ONE, NoTemplateTokenizer()) == format_chat(ONE, template="chatml")
    assert format_chat(ONE) == format_chat(ONE, template="chatml")
    assert format_chat(ONE, FakeTokenizer(), template="default") == "Human: Hi\n\nAssistant:"


def test_auto_with_real_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "Hi": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    assert format_chat(ONE, hf) == format_chat(ONE, template="chatml")  # no template yet
    hf.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert format_chat(ONE, hf) == "<user>Hi<assistant>"
    assert format_chat(ONE, hf, add_generation_prompt=False) == "<user>Hi"


def test_chat_errors():
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'.*chatml.*llama2"):
        format_chat(ONE, template="vicuna")
    with pytest.raises(ValueError):
        format_chat([], template="chatml")
    with pytest.raises(ValueError, match="role"):
        format_chat([{"role": "bot", "content": "x"}], template="chatml")
    with pytest.raises(ValueError, match="system"):
        format_chat([ONE[0], {"role": "system", "content": "S"}], template="chatml")
