"""The baseline of bench/training.py: a plain TRL + PEFT LoRA script, nothing of tuneline in it.

Run: python bench/plain_trl.py CONFIG.json  (written by bench/training.py); prints one JSON line.
Same model, data, conversion to prompt/completion and trainer arguments as the training service.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main(path: str) -> None:
    started = time.monotonic()
    config = json.loads(Path(path).read_text())
    lines = Path(config["train_file"]).read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    examples = []
    for row in rows:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        examples.append({"prompt": messages[:last], "completion": [messages[last]]})
    tokenizer = AutoTokenizer.from_pretrained(config["model_dir"], local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        config["model_dir"], dtype=torch.float32, local_files_only=True
    )
    args = SFTConfig(
        output_dir=config["output_dir"],
        learning_rate=config["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        max_steps=config["max_steps"],
        per_device_train_batch_size=config["batch_size"],
        seed=42,
        data_seed=42,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config["checkpoint_steps"],
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        max_length=config["max_seq_len"],
        completion_only_loss=True,
        gradient_checkpointing=False,
        include_num_input_tokens_seen="non_padding",
    )
    peft = LoraConfig(
        r=config["rank"], lora_alpha=config["alpha"], lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft,
    )
    loop_started = time.monotonic()
    trainer.train()
    loop = time.monotonic() - loop_started
    trainer.model.save_pretrained(f"{config['output_dir']}/final")
    tokens = float(trainer.state.num_input_tokens_seen)
    print(
        json.dumps(
            {
                "tokens": tokens,
                "loop_s": loop,
                "wall_s": time.monotonic() - started,
                "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
