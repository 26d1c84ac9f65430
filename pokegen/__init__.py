"""Code that pokegen's stages share, one module per thing:

- episode_codes: Bulbapedia's episode codes (EP001, AG005, ...) and their broadcast order
- gpt2_format: what GPT-2's files and gpt-2-simple's corpora agree on (the end-of-text delimiter)
- atomic_files: writing a file or a folder so that readers see the old one or all of the new one
- model_card: the JSON card beside a checkpoint that says what it is (written by train.py, read
  by the service)
- new_model: a new, randomly initialised model in GPT-2's own format (train.py --from-scratch)
- service_stack: the real service (scripts/serve.sh) on a free 127.0.0.1 port, for the tests,
  the benchmarks and the screenshots
"""
