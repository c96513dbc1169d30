# Production image: gunicorn serves the dashboard; the same image runs `wangge pipelines`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# The CJK TrueType font the PDF export embeds (pipelines/assessment/pdf_font.py).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md config.toml ./
COPY pipelines ./pipelines
COPY dashboard ./dashboard
COPY assets ./assets
RUN pip install . && python -m dashboard.vendor \
    && useradd -r wangge && mkdir -p var && chown wangge var
USER wangge
EXPOSE 8050 8052
# The dashboard and the push server listen on every interface in the container.
ENV WANGGE_DASHBOARD_HOST=0.0.0.0 WANGGE_DASHBOARD_PORT=8050 WANGGE_PUSH_HOST=0.0.0.0
# Dashboard:  docker run IMAGE            Pipelines: docker run IMAGE wangge pipelines
# Live push:  docker run IMAGE python -m dashboard.push   (README "Live push")
# The one serving command (`wangge run` starts the same): gunicorn, threaded workers.
CMD ["gunicorn", "-c", "python:dashboard.gunicorn_conf"]
