"""Shared fixtures: a tiny real corpus and a tiny model, so the package's tests run in seconds."""

import pytest
import torch

from minigpt import GPT, GPTConfig, CharTokenizer, encode_corpus, shakespeare, train_val_split


@pytest.fixture(scope="session")
def corpus() -> str:
    """The first 20,000 characters of the built-in Shakespeare."""
    return shakespeare(20_000)


@pytest.fixture(scope="session")
def char_tokenizer(corpus) -> CharTokenizer:
    return CharTokenizer.train(corpus)


@pytest.fixture(scope="session")
def splits(corpus, char_tokenizer):
    return train_val_split(encode_corpus(corpus, char_tokenizer))


@pytest.fixture
def tiny_config(char_tokenizer) -> GPTConfig:
    return GPTConfig(vocab_size=char_tokenizer.vocab_size, context_length=16, d_model=32,
                     num_heads=4, num_blocks=2, dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config).eval()


def pytest_addoption(parser):
    parser.addoption("--notebooks", action="store_true", default=False,
                     help="also run the tests marked 'notebooks': every chapter executed with solutions/ and with the "
                          "stubs as the learner's files (several minutes; `make test-tryit`)")


def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: executes every chapter notebook (slow); runs with --notebooks")
    config.addinivalue_line("markers", "start_method: a test of tests/test_grader.py whose outcome depends on how "
                                       "workers start; `make test` runs these again with MINIGPT_GRADER_START=spawn")
    config.addinivalue_line("markers", "reads(*runs): the grading runs of tests/test_grader.py that a test reads "
                                       "(only those are made)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--notebooks"):
        return
    skip = pytest.mark.skip(reason="executes every chapter twice (several minutes): run it with `make test-tryit` "
                                   "(pytest tests/test_tryit.py --notebooks), which `make test` includes")
    for item in items:
        if "notebooks" in item.keywords:
            item.add_marker(skip)
