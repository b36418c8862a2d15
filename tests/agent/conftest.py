import pytest

from agent_helpers import workdir_writer


@pytest.fixture
def workdir(tmp_path):
    """A device workdir with runs/r1/: write_job(job) -> (job_path, out_dir); .root is WORKDIR."""
    return workdir_writer(tmp_path)
