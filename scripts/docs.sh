#!/usr/bin/env bash
# Builds the documentation site (mkdocs.yml, docs/) into site/, with warnings as
# errors: a broken internal link or anchor, a page missing from the nav or a snippet
# that is not there fails the build (mkdocs.yml's `validation:` and the snippets'
# check_paths). Installs the docs extra into .venv when it is missing.
#   bash scripts/docs.sh            # build into site/
#   bash scripts/docs.sh DIR        # build into DIR
set -euo pipefail
export NO_MKDOCS_2_WARNING=1  # the theme's notice about MkDocs 2, not about these docs
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
ensure_venv docs
.venv/bin/mkdocs build --strict --clean --site-dir "${1:-site}"
