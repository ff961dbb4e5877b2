# SPDX-License-Identifier: GPL-2.0-only
#
# Minimal Sphinx configuration for `make docs` (Debian's python3-sphinx).
# The ABI files under ABI/ are plain text in the kernel's ABI format and
# are not part of the Sphinx build.

project = 'vfio-user-mdev'
copyright = 'vfio-user-mdev developers'
root_doc = 'index'
exclude_patterns = ['ABI']
highlight_language = 'none'
html_theme = 'alabaster'
html_show_sourcelink = False
