# ClawCage images (include from the top-level Makefile: `include images/images.mk`).
# Needs root, mmdebstrap and a Debian mirror; see images/README.md.
IMAGES_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
IMAGES_PYTHON ?= python3

.PHONY: images images-lock images-reproducible

# Build claw-runtime and egress-proxy into the local engine; prints "<tag> sha256:<image id>".
images:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py

# Re-resolve every package against the mirror and rewrite images/*/packages.lock (review the diff).
images-lock:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py --update-lock

# Build each image twice and fail unless the layer tars are byte-identical.
images-reproducible:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py --twice
