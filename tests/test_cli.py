"""The `bisenet-rt` command as a newcomer meets it: parsers that take no guesses, help with examples."""
from __future__ import annotations

import argparse

import pytest

from bisenet_rt.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_parser_refuses_abbreviations():
    """argparse's prefix matching would take `--engines` for `--engines-dir`; no parser of ours does that."""
    assert build_parser().allow_abbrev is False
    commands = _subcommands()
    assert {"export", "build", "bench", "segment", "eval", "synth", "train", "export-triton"} <= set(commands)
    assert all(p.allow_abbrev is False for p in commands.values())


@pytest.mark.parametrize("argv, unknown", [(["bench", "--engines", "x.onnx"], "--engines"),
                                           (["build", "--weight", "m.pth"], "--weight"),
                                           (["segment", "a.png", "-o", "out", "--overl"], "--overl")])
def test_a_prefix_of_an_option_is_an_error(argv, unknown, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and f"unrecognized arguments: {unknown}" in capsys.readouterr().err


def test_every_subcommand_shows_examples_that_parse():
    """Each --help ends with examples; each example is a command line its own parser accepts."""
    parser = build_parser()
    for name, sub in _subcommands().items():
        text = sub.format_help()
        assert "\nexamples:\n" in text, name
        examples = text.split("\nexamples:\n", 1)[1].splitlines()
        assert examples, name
        for line in examples:
            command = line.split("#", 1)[0].split()
            assert command[:2] == ["bisenet-rt", name], line
            parser.parse_args(command[1:])  # SystemExit (2) if an example names an option that does not exist


def test_help_texts_name_their_choices():
    commands = _subcommands()
    bench = commands["bench"].format_help()
    assert "{auto,tensorrt,onnxruntime,openvino,torch}" in bench and "--rounds" in bench
    build = commands["build"].format_help()
    assert "OpenVINO" in (commands["build"].description or "") and "--model-size WxH      size frames are resized" in build
    assert "--batch 1" in commands["export"].format_help() and "{1}" not in commands["export"].format_help()
