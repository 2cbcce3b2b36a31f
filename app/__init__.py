"""The chat app: a streaming Gradio page (and a terminal chat) for a fine-tuned model.

Self-contained on purpose: it imports nothing from `finetune/` or `publish/`, because this package is exactly what a
hosted demo (Hugging Face Space, OpenXLab app, ModelScope studio) runs.
"""
