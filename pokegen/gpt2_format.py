"""What GPT-2's files and gpt-2-simple's corpora agree on."""

# The last token of GPT-2's vocabulary. gpt-2-simple separates the documents of a training text
# with it, and a fine-tuned model writes it (as text) where an episode ends.
END_OF_TEXT = "<|endoftext|>"
