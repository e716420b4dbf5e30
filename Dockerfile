FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY compute ./compute
COPY shared ./shared
COPY backlane ./backlane
COPY static ./static
RUN pip install --no-cache-dir .
ENV BACKLANE_HOST=0.0.0.0
ENTRYPOINT ["backlane"]
CMD ["--help"]
