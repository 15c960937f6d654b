"""``charlite serve``: an OpenAI-compatible API in which every character is a model.

* :mod:`charlite.serve.protocol`: requests, OpenAI-shaped errors, role-play prompts, replies;
* :mod:`charlite.serve.thoughts`: dropping ``(thinking)`` lines from a streamed reply;
* :mod:`charlite.serve.app`: the FastAPI app (needs the ``serve`` extra);
* :mod:`charlite.serve.server`: binding, running in the foreground or in a thread.

Usage with the ``openai`` client::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="beethoven", messages=[{"role": "user", "content": "Hi"}])
"""
