"""Run by test_sft_card.py with the training environment's Python (LLaMA-Factory, datasets): reads a published
SFT folder as a receiver would (datasets.load_dataset through the card's Parquet config) and as training does
(LLaMA-Factory's own loader through dataset_info.json, tokenized with a small tokenizer built here). Prints JSON."""

import json
import string
import sys
import tempfile

import datasets
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments, ModelArguments
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Seq2SeqTrainingArguments

folder = sys.argv[1]
parquet = datasets.load_dataset(folder)["train"]
texts = [t for row in parquet for t in (row["instruction"], row["output"])]
characters_seen = sorted(set("".join(texts) + string.printable))
vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(characters_seen)}}
characters = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
characters.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=characters, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
)
data_args = DataArguments(dataset="madef_sft", dataset_dir=folder, template="default", cutoff_len=4096)
with tempfile.TemporaryDirectory() as output_dir:
    training_args = Seq2SeqTrainingArguments(output_dir=output_dir, report_to="none")
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    model_args = ModelArguments(model_name_or_path="unused")  # the loader reads no model
    module = get_dataset(template, model_args, data_args, training_args, "sft", tokenizer)
train = module["train_dataset"]
first = train[0]
print(
    json.dumps(
        {
            "parquet_rows": parquet.num_rows,
            "parquet_columns": parquet.column_names,
            "train_rows": train.num_rows,
            "train_columns": train.column_names,
            "labelled_tokens": sum(1 for label in first["labels"] if label != -100),
            "response": tokenizer.decode([t for t, label in zip(first["input_ids"], first["labels"]) if label != -100]),
        }
    )
)
