# The CPU component image: every kfp-serve component runs in it with install_kfp_package=False,
# so kfp and kfp-serve are installed here at the versions the pipelines were compiled with.
#
#   docker build -t REGISTRY/kfp-serve:TAG \
#     --build-arg BASE_IMAGE=python:3.11-slim@sha256:$(docker buildx imagetools inspect \
#         python:3.11-slim --format '{{json .Manifest.Digest}}' | tr -d '"') .
#
# BASE_IMAGE must be a Debian/Ubuntu-based image with python3 (3.10-3.13) and its shared
# libpython (the Triton Python backend stub links against it), e.g. python:3.11-slim, and it
# must be pinned by digest (NAME@sha256:...): a tag can move, and what ships would change with
# it. Renew the digest when the base gets security updates. `kfp-serve image build` pins the
# local base it builds on by itself.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG BASE_IMAGE
RUN case "${BASE_IMAGE}" in *@sha256:*) ;; *) \
      echo "BASE_IMAGE ${BASE_IMAGE} is not pinned by digest: pass --build-arg BASE_IMAGE=NAME@sha256:DIGEST (docker buildx imagetools inspect NAME)" >&2; exit 1;; esac
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/src/build-extras
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY build-extras ./build-extras
COPY components ./components
COPY pipelines ./pipelines
RUN python3 -c "import sys, venv, ensurepip" \
 || { echo "BASE_IMAGE has no usable python3 with venv/ensurepip (e.g. use python:3.11-slim, or install python3-venv)" >&2; exit 1; } \
 && if [ -f build-extras/extra-ca.crt ]; then export PIP_CERT=/src/build-extras/extra-ca.crt; fi \
 && python3 -m venv /opt/kfp-serve \
 && /opt/kfp-serve/bin/pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && /opt/kfp-serve/bin/pip install -c constraints.txt ".[export,serve,local,kserve,vertex,llm]" "torch==${TORCH_VERSION}" \
 && /opt/kfp-serve/bin/pip install --no-deps nvidia-pytriton==0.7.0

FROM ${BASE_IMAGE}
COPY --from=build /opt/kfp-serve /opt/kfp-serve
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin kfpserve
ENV PATH=/opt/kfp-serve/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    KFP_SERVE_STATE_DIR=/tmp/kfp-serve
USER 1000
WORKDIR /home/kfpserve
CMD ["kfp-serve", "--help"]
