"""What swarmnode's own code is measured against: plain transformers `model.generate` with the sampler's settings
(temperature, no top-k/top-p, stop at EOS or </answer>), counting the tokens each sequence keeps."""

from __future__ import annotations

import torch

from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.tasks import ANSWER_CLOSE


def plain_generate(policy: Policy, prompts: list[str], group: int, settings: SamplingSettings, seed: int) -> int:
    torch.manual_seed(seed)
    tokenizer = policy.tokenizer
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(policy.device)
    with torch.inference_mode(), policy.autocast():
        out = policy.model.generate(
            **encoded,
            do_sample=True,
            temperature=settings.temperature,
            top_k=0,
            top_p=1.0,
            num_return_sequences=group,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=sorted(policy.eos_ids),
            pad_token_id=tokenizer.pad_token_id,
            stop_strings=[ANSWER_CLOSE],
            tokenizer=tokenizer,
        )
    kept = 0
    for row in out[:, encoded.input_ids.shape[1] :].tolist():
        for length, token in enumerate(row, start=1):
            if token in policy.eos_ids or ANSWER_CLOSE in tokenizer.decode(row[:length]):
                break
        kept += length
    return kept
