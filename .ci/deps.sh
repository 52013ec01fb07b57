# What .ci/run installs and .ci/lock pins, in one place (sourced by both; not run on its own).
# The CPU build of torch is installed first: a bare torch requirement pulls a multi-GB CUDA build.
TORCH_VERSION=2.13.0
# the extras .ci/run installs (all of them: the suite tests every optional part)
EXTRAS=test,images,multilingual,fast,llm-server,dask
# Label Studio, in a venv of its own (.venv-ls): its pinned dependencies must not touch ours
LABEL_STUDIO_VERSION=1.23.2
# the pinned versions of every package of .venv and of .venv-ls; .ci/lock rewrites them
CONSTRAINTS=.ci/constraints.txt
CONSTRAINTS_LS=.ci/constraints-ls.txt
