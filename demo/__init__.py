"""Offline demo data for pokegen.

Everything here is SYNTHETIC: episode summaries written by a template generator
(`synthetic_episodes`), rendered as MediaWiki-like pages (`wiki_markup`) and
served on 127.0.0.1 (`local_wiki`) so that the real crawler and corpus
preparation can run end to end without Bulbapedia (`build_demo_data`).
None of the text comes from Bulbapedia or any other source.
"""
