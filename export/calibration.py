"""Texts that calibrate int8 smoothing: they only set which feature channels run large.

Written for this project (no dataset's licence to carry), varied in length, topic and form, and
distinct from the verification probes (export/verify.py), so verification stays an independent check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_TEXTS = [
    "what is the capital of australia",
    "Canberra was chosen as a compromise between Sydney and Melbourne.",
    "How many calories are in a medium banana?",
    "The patient reported mild chest pain after climbing two flights of stairs.",
    "Quarterly revenue rose 12% year over year, driven by subscription growth.",
    "def mean(xs): return sum(xs) / len(xs)",
    "SELECT name, COUNT(*) FROM orders GROUP BY name ORDER BY 2 DESC;",
    "A man is playing a guitar on a street corner while people walk past.",
    "Two dogs are running through a field of tall grass.",
    "The court ruled that the contract was void because one party lacked capacity.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Best hiking trails near Denver for beginners?",
    "I loved the first season, but the ending felt rushed and unearned.",
    "Error: connection refused (errno 111) while contacting the database at port 5432.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Preheat the oven to 180 degrees, then whisk the eggs with the sugar until pale.",
    "Researchers trained a transformer on protein sequences to predict folding.",
    "Is it safe to take ibuprofen with coffee?",
    "The new phone has a 6.1-inch display, 128 GB of storage and a 4,000 mAh battery.",
    "Interest rates were left unchanged at 5.25 percent.",
    "She whispered that the train would leave at dawn, and nobody believed her.",
    "Represent this sentence for searching relevant passages: vector databases",
    "The mitochondria is the powerhouse of the cell.",
    "Install the package with pip, then run the command line tool with --help.",
    "Manchester United drew 2-2 with Liverpool after a late penalty.",
    "Climate models project more frequent heat waves over southern Europe.",
    "My order arrived damaged and customer support has not replied in a week.",
    "A quick brown fox jumps over the lazy dog.",
    "Translate 'good morning' into French, German and Japanese.",
    "The algorithm runs in O(n log n) time and uses O(n) extra memory.",
    "Volunteers planted three hundred trees along the river bank on Saturday.",
    "Why does ice float on water?",
    "In 2019 the company opened offices in Nairobi, Lagos and Accra.",
    "The senator's amendment failed by a vote of 48 to 52.",
    "Wireless earbuds with noise cancellation under 100 dollars",
    "The painting, long attributed to a student, was confirmed as an early work by the master "
    "after infrared imaging revealed an underdrawing typical of his workshop in the 1630s.",
    "Symptoms include fever, dry cough, fatigue and loss of taste or smell.",
    "Kubernetes schedules pods onto nodes according to their resource requests.",
    "He apologized for the delay and promised a full refund by Friday.",
    "Mount Everest is 8,849 meters tall according to the 2020 survey.",
]


def calibration_batches(
    tokenizer: Path, max_seq_length: int, inputs: list[str]
) -> list[dict[str, np.ndarray]]:
    """The calibration texts as the runtime feeds them: tokenized, padded, in batches of 8."""
    from gist_onnx.tokenize import TextTokenizer

    text_tokenizer = TextTokenizer(tokenizer, max_seq_length)
    encodings = text_tokenizer.encode(CALIBRATION_TEXTS)
    return [text_tokenizer.pad(encodings[i : i + 8], inputs) for i in range(0, len(encodings), 8)]
