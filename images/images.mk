# ClawCage images (include from the top-level Makefile: `include images/images.mk`).
# Needs root, mmdebstrap, apt and a Debian mirror; see images/README.md.
IMAGES_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
IMAGES_PYTHON ?= python3

.PHONY: images images-check images-lock images-reproducible

# Build claw-runtime, egress-proxy (trixie) and egress-broker (bookworm) from what Debian serves now into the local engine; records the
# packages, the archive state and the image IDs in build/images/images.json (the local stack reads the
# IDs from there); prints "<tag> sha256:<image id>".
images:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py

# Has the archive moved since the last build? Lists what moved (security updates marked); exit 1 when a
# rebuild is due, 0 when nothing moved.
images-check:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py --check

# Build, then record the installed packages in images/*/packages.lock, the reviewed record (commit it).
images-lock:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py --update-lock

# Build each image twice from one archive state and fail unless the layer tars are byte-identical.
images-reproducible:
	$(IMAGES_PYTHON) $(IMAGES_DIR)/build.py --twice
