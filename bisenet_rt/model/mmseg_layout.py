"""MMSegmentation's BiSeNetV2 state-dict layout, renamed key by key to ours.

An MMSeg checkpoint holds `backbone.*` (detail, semantic, bga) and `decode_head.*` (an FCNHead with
one 3x3 conv and the classifier `conv_seg`), plus training-only `auxiliary_head.*` FCN heads that
are dropped. Every other key has exactly one counterpart here with the same shape; the two
layouts differ in names only (the BGA variant is a separate matter, `families.BGAVariant`).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

__all__ = ["is_mmseg_layout", "from_mmseg", "AUX_PREFIX"]

#: MMSeg's training-only auxiliary heads; not part of the inference network.
AUX_PREFIX = "auxiliary_head."
_CONV_BN = {"conv": "0", "bn": "1"}
_STAGE = {"2": "S3", "3": "S4", "4": "S5_4"}
_BGA_SEPARABLE = {"detail_dwconv": "left1", "semantic_dwconv": "right2"}
_BGA_PLAIN = {"detail_down": "left2", "semantic_conv": "right1"}
_SEMANTIC = r"backbone\.semantic\.stage([234])\.(\d)\."


def _separable(kind: str, part: str) -> str:
    """Index in our flat (conv, bn, conv[, bn]) Sequential of MMSeg's DepthwiseSeparableConvModule part."""
    return str(int(kind == "pointwise") * 2 + int(part == "bn"))


#: (pattern matching the start of an MMSeg key, our prefix for it); the rest of the key is kept.
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [(re.compile(p), f) for p, f in [
    (r"backbone\.detail\.detail_branch\.(\d)\.(\d)\.", lambda m: f"detail.S{int(m[1]) + 1}.{m[2]}."),
    (r"backbone\.semantic\.stage1\.conv_first\.", lambda m: "segment.S1S2.conv."),
    (r"backbone\.semantic\.stage1\.convs\.", lambda m: "segment.S1S2.left."),
    (r"backbone\.semantic\.stage1\.fuse_last\.", lambda m: "segment.S1S2.fuse."),
    (r"backbone\.semantic\.stage4_CEBlock\.gap\.1\.", lambda m: "segment.S5_5.bn."),
    (r"backbone\.semantic\.stage4_CEBlock\.(conv_gap|conv_last)\.", lambda m: f"segment.S5_5.{m[1]}."),
    (_SEMANTIC + r"conv1\.", lambda m: f"segment.{_STAGE[m[1]]}.{m[2]}.conv1."),
    (_SEMANTIC + r"conv2\.0\.(conv|bn)\.", lambda m: f"segment.{_STAGE[m[1]]}.{m[2]}.conv2.{_CONV_BN[m[3]]}."),
    # The first GE layer of a stage has stride 2: two depthwise convs and a separable shortcut.
    (r"backbone\.semantic\.stage([234])\.0\.dwconv\.([01])\.(conv|bn)\.",
     lambda m: f"segment.{_STAGE[m[1]]}.0.dwconv{int(m[2]) + 1}.{_CONV_BN[m[3]]}."),
    (r"backbone\.semantic\.stage([234])\.([1-9])\.dwconv\.0\.(conv|bn)\.",
     lambda m: f"segment.{_STAGE[m[1]]}.{m[2]}.dwconv.{_CONV_BN[m[3]]}."),
    (r"backbone\.semantic\.stage([234])\.0\.shortcut\.0\.(depthwise|pointwise)_conv\.(conv|bn)\.",
     lambda m: f"segment.{_STAGE[m[1]]}.0.shortcut.{_separable(m[2], m[3])}."),
    (r"backbone\.bga\.(detail_dwconv|semantic_dwconv)\.0\.(depthwise|pointwise)_conv\.(conv|bn)\.",
     lambda m: f"bga.{_BGA_SEPARABLE[m[1]]}.{_separable(m[2], m[3])}."),
    (r"backbone\.bga\.(detail_down|semantic_conv)\.0\.(conv|bn)\.", lambda m: f"bga.{_BGA_PLAIN[m[1]]}.{_CONV_BN[m[2]]}."),
    (r"backbone\.bga\.conv\.(conv|bn)\.", lambda m: f"bga.conv.{_CONV_BN[m[1]]}."),
    (r"decode_head\.convs\.0\.", lambda m: "head.conv."),
    (r"decode_head\.conv_seg\.", lambda m: "head.conv_out.1."),
]]


def is_mmseg_layout(state: Mapping[str, Any]) -> bool:
    """True for MMSeg's key layout: every key under backbone., decode_head. or auxiliary_head."""
    return bool(state) and all(k.startswith(("backbone.", "decode_head.", AUX_PREFIX)) for k in state)


def _rename(key: str) -> str | None:
    for pattern, prefix in _RULES:
        m = pattern.match(key)
        if m:
            return prefix(m) + key[m.end():]
    return None


def from_mmseg(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """MMSeg state dict -> (ours, MMSeg keys with no counterpart); the auxiliary heads are dropped."""
    renamed, unknown = {}, []
    for key, value in state.items():
        if key.startswith(AUX_PREFIX):
            continue
        ours = _rename(key)
        if ours is None:
            unknown.append(key)
        else:
            renamed[ours] = value
    return renamed, unknown
