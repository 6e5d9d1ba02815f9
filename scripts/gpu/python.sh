# python.sh, sourced by the GPU scripts: sets PY to a Python that imports
# torch ($PYTHON, else python3, else a virtual environment under /opt, as
# the GPU machines have, else /usr/bin/python3 as Debian's python3-torch
# installs it), or to python3 when none does.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import torch' 2>/dev/null; then
  for p in /opt/torch/.venv/bin/python3 /opt/*/.venv/bin/python3 /usr/bin/python3; do
    if [ -x "$p" ] && "$p" -c 'import torch' 2>/dev/null; then PY=$p; break; fi
  done
fi
