"""Export: a trained character leaves the training machine as files llama.cpp and Ollama run.

* :mod:`~charlite.export.gguf_lora`: the run's peft adapter as a GGUF LoRA over its base;
* :mod:`~charlite.export.merge`: base + LoRA delta as one GGUF, then quantized;
* :mod:`~charlite.export.convert`: Hugging Face llama-family weights to GGUF;
* :mod:`~charlite.export.modelfile`: Ollama Modelfiles, quoted so a profile cannot inject;
* :mod:`~charlite.export.smoke`: load the result, ask a question, check that it stops cleanly;
* :mod:`~charlite.export.exporter`: the whole ``charlite export`` (staging folder, manifest);
* :mod:`~charlite.export.ollama`: publishing an export to Ollama (``--ollama``).

Which export a chat uses is :mod:`charlite.voices`.

Nothing here imports torch: GGUF files are read and written with the ``gguf`` package and
adapters are read straight from their safetensors file.
"""
