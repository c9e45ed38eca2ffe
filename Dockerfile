# vidgan on PyTorch's CUDA runtime image: `docker build -t vidgan .`, then `docker run --gpus all vidgan COMMAND`.
#
# The base brings Python, CUDA, cuDNN, torch and torchvision; pip adds the rest from PyPI (decord too, on
# x86_64). PyAV's wheel carries its own FFmpeg with libx264, so no ffmpeg package is installed.
# CUDA 13 needs an NVIDIA driver >= 580 and a Turing or newer GPU; for an older driver or a V100, build with
#   --build-arg BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.6-cudnn9-runtime
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

# From 2.10 on these images install into a system Python marked externally managed (PEP 668); a container
# holds one application, so pip may install there (the variable is harmless on older, conda-based tags).
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# The source stays here, so recipes and `vidgan/train.py` have a fixed path: /opt/vidgan/recipes/...
WORKDIR /opt/vidgan
COPY pyproject.toml README.md ./
COPY vidgan ./vidgan
COPY data_tools ./data_tools
COPY recipes ./recipes

# The image's CUDA builds of torch and torchvision (their installed versions, as pip sees them) become
# constraints: pip keeps them rather than fetching PyPI's. `vidgan --help` checks that the entry point is installed.
RUN python3 -c 'from importlib.metadata import version as v; print(*(f"{p}=={v(p)}" for p in ("torch", "torchvision")), sep="\n")' \
        > /tmp/keep-torch.txt \
 && python3 -m pip install -c /tmp/keep-torch.txt . \
 && rm /tmp/keep-torch.txt \
 && vidgan --help > /dev/null

# Mount the folder that holds videos, prepared clips and runs here; recipe paths are relative to it.
WORKDIR /workspace
ENTRYPOINT ["vidgan"]
CMD ["--help"]
