"""One SAPO step under an address-space limit (run as its own process by tests/test_memory.py).

A one-layer model with Qwen2.5's 151,936-token vocabulary, projected in one chunk (not the node's default of
110 tokens at this vocabulary): a row's logits are large (29 MB), so a micro-batch of 16 needs most of a gigabyte and one
of 2 under a hundred megabytes. The optimizer state is allocated by a first
step before the limit is set; the second step must fit by halving its micro-batch.
Usage: python oom_probe.py MICRO_BATCH HEADROOM_MIB  -> prints the step's stats as JSON
"""

import json
import resource
import signal
import sys

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig
from swarmnode.learn import policy as policy_module
from swarmnode.learn.group import Group
from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, Policy
from swarmnode.learn.sapo import SapoTrainer
from swarmnode.learn.selection import Selection

LIFETIME_S = 330  # longer than the test waits for it (300 s)


def main(micro_batch: int, headroom_mib: float) -> None:
    signal.alarm(LIFETIME_S)  # ends itself even if the test that started it was killed
    torch.set_num_threads(1)
    policy_module.LOGIT_CHUNK_BYTES = 2**40  # all of a micro-batch's logits at once: they grow with it
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128,
        vocab_size=151_936, tie_word_embeddings=True,
    ))
    policy = Policy(model, AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR), "wide", torch.device("cpu"))
    trainer = SapoTrainer(policy, SapoConfig(kl_to_start=False), OptimizerConfig(), MemoryConfig(micro_batch_size=16), max_new_tokens=48)
    generator = torch.Generator().manual_seed(0)

    def ids(count: int) -> list[int]:
        return torch.randint(10, 4000, (count,), generator=generator).tolist()

    groups = [
        Group(task=None, prompt_ids=ids(32), completion_ids=[ids(48) for _ in range(8)],
              rewards=[float(k % 2) for k in range(8)], source="own")
        for _ in range(2)
    ]
    selection = Selection(groups, [])
    trainer.step(selection)  # allocates the optimizer state, without a limit
    trainer.micro_batch_size = micro_batch
    before = model.model.embed_tokens.weight.detach().clone()
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (used + int(headroom_mib * 2**20), resource.RLIM_INFINITY))
    stats = trainer.step(selection)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    changed = not torch.equal(model.model.embed_tokens.weight.detach(), before)
    print(json.dumps({
        "micro_batch_size": stats.micro_batch_size, "out_of_memory": stats.out_of_memory,
        "skipped_reason": stats.skipped_reason, "updates": stats.updates, "weights_changed": changed,
    }))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
