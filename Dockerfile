FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY compute ./compute
COPY shared ./shared
COPY backlane ./backlane
COPY static ./static
# editable, so the code runs from /app and the UI in /app/static is served
RUN pip install --no-cache-dir -e .
ENV BACKLANE_HOST=0.0.0.0
ENTRYPOINT ["backlane"]
CMD ["--help"]
