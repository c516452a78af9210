"""Building images from Dockerfiles: one layer per RUN/COPY/ADD, config changes for the rest."""
