#!/bin/sh
exec cat /srv/app/version.txt
