# One image for every Redial process: the four HTTP services (intake, queue,
# metrics, nurture) and the one-shot `redial-init` job. docker-compose.yml
# picks the process through `command:`, so nothing here is service specific.
#
# Build:  docker build -t redial:local .
# Run:    docker run --rm redial:local uvicorn --factory \
#             services.intake.app:create_app --host 0.0.0.0 --port 8001

# The base is overridable for security rebuilds (e.g. a newer patch digest)
# without editing this file. 3.11 is the oldest Python pyproject.toml allows,
# and the one CI and the developers' machines run.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# PYTHONUNBUFFERED: log lines reach `docker logs` as they are written, not
#   when a buffer fills (matters for JSON logs shipped by the log driver).
# PYTHONDONTWRITEBYTECODE: site-packages is owned by root and the process runs
#   as an unprivileged user, so runtime .pyc writes would only fail; pip
#   already compiles the bytecode once at install time.
# PIP_*: keep the build output quiet and the layers free of pip's cache.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The unprivileged user the processes run as (see USER below). A fixed uid
# lets volume permissions and security policies rely on it; the home folder
# exists because some libraries look up per-user cache or config folders.
RUN groupadd --system --gid 10001 redial \
    && useradd --system --uid 10001 --gid redial \
        --create-home --home-dir /home/redial --shell /usr/sbin/nologin redial

WORKDIR /src

# Dependencies first, in their own layer, so that editing Python code does not
# re-download every wheel. The list is read from pyproject.toml itself (tomllib
# is in the 3.11 standard library), so there is no second requirements file to
# keep in step with it. Every pinned dependency ships manylinux wheels for
# x86_64, so the slim image needs no compiler.
COPY pyproject.toml ./
RUN python -c "import tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(deps))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Now the project itself. README.md is copied when it exists because
# pyproject.toml names it as the package readme; the trailing `*` keeps the
# build working while it is absent (pyproject.toml is listed again so the
# instruction always has one real match, which the classic builder needs).
# A regular, non-editable install puts `shared` and `services`, with their
# packaged *.sql migrations and *.json schemas, into site-packages. The
# dependencies are already satisfied, so this only builds the redial wheel.
# The sources are removed afterwards: nothing may import from a copy of them.
COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir . \
    && rm -rf /src

# The working directory holds no code, so `python -m` and uvicorn import the
# installed packages and never a source tree that could shadow them. USER is
# numeric because Kubernetes' runAsNonRoot can only verify a numeric uid.
WORKDIR /home/redial
USER 10001:10001

# Documentation only: the ports the four services use by convention
# (intake 8001, queue 8002, metrics 8003, nurture 8004).
EXPOSE 8001 8002 8003 8004

# docker-compose.yml always sets the command; without one the container just
# prints the launcher's usage instead of guessing which service to start.
CMD ["python", "-m", "shared.launcher", "--help"]
