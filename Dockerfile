# The image the Kubernetes manifest runs (loadgen k8s-manifest ... --image IMAGE).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY loadgen ./loadgen
COPY scenarios ./scenarios
RUN pip install --no-cache-dir . && useradd --create-home loadgen
USER loadgen
# the live metrics endpoint of a pod (k8s-manifest --metrics-port)
EXPOSE 9464
ENTRYPOINT ["loadgen"]
CMD ["--help"]
