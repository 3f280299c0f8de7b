# triage live service: numpy + onnxruntime + websockets + redis client; the model ships in models/.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY triage ./triage
COPY training ./training
COPY models ./models
RUN pip install --no-cache-dir -e .
EXPOSE 8765
# Bind to every interface inside the container; publish the port only where it must be reached.
CMD ["triage", "serve", "--host", "0.0.0.0", "--port", "8765"]
